# Reads `evidence: <harness> key=value ...` lines (anything else is ignored)
# and prints one row per line, then the totals per harness and figure.
# Figures that count damage (lost, corrupt, invariant breaks, crashes,
# panics, ...) must be 0; the exit status is 1 when one is not, or when no
# evidence line was found at all.
function must_be_zero(key) {
    return key ~ /^(lost|corrupt|corrupt_served|served_corrupt|invariant_breaks|crashes|panics|changed|echoed|collateral|undetected)$/
}
$1 == "evidence:" {
    rows++
    harness = $2
    detail = ""
    for (i = 3; i <= NF; i++) {
        split($i, kv, "=")
        key = kv[1]; value = substr($i, length(key) + 2)
        detail = detail sprintf(" %s=%s", key, value)
        if (value ~ /^[0-9]+$/) {
            id = harness SUBSEP key
            if (!(id in total)) { order[++n] = id }
            total[id] += value
            if (must_be_zero(key) && value + 0 != 0) { bad[id] = 1 }
        }
    }
    printf "  %-12s%s\n", harness, detail
}
END {
    if (rows == 0) { print "no evidence lines found"; exit 1 }
    print ""
    printf "  %-12s %-18s %14s  %s\n", "harness", "figure", "total", "check"
    failed = 0
    for (i = 1; i <= n; i++) {
        split(order[i], part, SUBSEP)
        check = must_be_zero(part[2]) ? (order[i] in bad ? "MUST BE 0" : "ok (must be 0)") : ""
        if (order[i] in bad) { failed = 1 }
        printf "  %-12s %-18s %14d  %s\n", part[1], part[2], total[order[i]], check
    }
    exit failed
}
