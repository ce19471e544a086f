//! Opening the store: every index block read into one list of images, in
//! ID order.
//!
//! A million images have about 200 MiB of records in about 6,500 blocks.
//! Blocks are in creation order and the snapshot lists images by ID, so the
//! records must be sorted. Walking them in ID order would miss the CPU cache
//! on nearly every record, and sorting the finished 128-byte entries moves
//! each of them to a random place, twice; either costs more than reading
//! the blocks. So each record is decoded straight into the bucket of
//! images sharing the leading bits of its ID (a counting sort), and each
//! bucket is sorted on its own. There are about [`BUCKET_TARGET`] images to
//! a bucket: few enough buckets that writing into all of them at once
//! stays close to writing in order, and small enough buckets to sort
//! within the CPU's cache. Two threads share each pass:
//!
//! 1. Each thread reads half of the blocks, copies them out of the database
//!    and counts their images per bucket.
//! 2. One vector is made for all images, each bucket's slots where the
//!    bucket will be, and each thread decodes its blocks into its share of
//!    every bucket.
//! 3. Each thread sorts half of the buckets.

use std::ops::Bound;

use bytes::Bytes;
use imagecache_core::{ImageId, Quarantined, SnapshotEntry};
use redb::ReadableTable as _;

use super::Error;
use super::record::{ImageKey, Record, block_entries};

/// About how many images a bucket should hold (2 MiB of entries).
/// Measured on a million images, 64 buckets decoded 40 % faster than 1,024,
/// and sorted only slightly slower.
const BUCKET_TARGET: usize = 1 << 14;

/// Most leading bits of the ID a bucket is chosen by.
const MAX_BUCKET_BITS: u32 = 12;

/// Below this many blocks one thread does all the work: starting a second
/// one would cost more than it saves.
const PARALLEL_BLOCKS: u64 = 16;

/// What a store's index blocks hold.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    /// The images, sorted by ID.
    pub(super) images: Vec<SnapshotEntry>,
    /// Blocks and records that could not be read, and repeated images.
    pub(super) quarantined: Vec<Quarantined>,
}

/// Reads every block of `table`. `expected` is about how many images they
/// hold; it only sizes the buckets.
pub(super) fn read(
    table: &redb::ReadOnlyTable<u64, &'static [u8]>,
    expected: u64,
) -> Result<Loaded, Error> {
    let first = table.first()?.map(|(k, _)| k.value());
    let last = table.last()?.map(|(k, _)| k.value());
    let (Some(first), Some(last)) = (first, last) else {
        return Ok(Loaded::default());
    };
    let middle = first + (last - first) / 2 + 1;
    let parallel = last - first >= PARALLEL_BLOCKS;
    let buckets = Buckets::for_images(expected);

    // Pass 1: copy the blocks and count their images per bucket.
    let (lower, upper) = both(
        parallel,
        || {
            copy_blocks(
                table,
                (Bound::Included(first), Bound::Excluded(middle)),
                buckets,
            )
        },
        || {
            copy_blocks(
                table,
                (Bound::Included(middle), Bound::Included(last)),
                buckets,
            )
        },
    );
    let (lower, upper) = (lower?, upper?);
    let mut quarantined = lower.quarantined;
    quarantined.extend(upper.quarantined);

    // Pass 2: decode every record into its bucket. Each bucket's slots are
    // the lower half's images, then the upper half's.
    let sizes: Vec<usize> = lower
        .counts
        .iter()
        .zip(&upper.counts)
        .map(|(a, b)| a + b)
        .collect();
    let total: usize = sizes.iter().sum();
    let mut images: Vec<SnapshotEntry> = (0..total).map(|_| placeholder()).collect();
    let (lower_slots, upper_slots) =
        split_slots(&mut images, &lower.counts, &upper.counts, buckets);
    let (lower_failed, upper_failed) = both(
        parallel,
        || decode(&lower.blocks, lower_slots, buckets),
        || decode(&upper.blocks, upper_slots, buckets),
    );
    let mut failed = lower_failed.positions;
    failed.extend(upper_failed.positions);
    failed.sort_unstable();
    quarantined.extend(lower_failed.quarantined);
    quarantined.extend(upper_failed.quarantined);

    // Pass 3: sort each bucket, half of them on each thread.
    let (left_sizes, right_sizes) = sizes.split_at(buckets.count() / 2);
    let left_len: usize = left_sizes.iter().sum();
    let (left, right) = images.split_at_mut(left_len);
    let (left, right) = both(
        parallel,
        || sort_buckets(left, 0, left_sizes, &failed),
        || sort_buckets(right, left_len, right_sizes, &failed),
    );
    let mut dropped = left.dropped;
    dropped.extend(right.dropped);
    quarantined.extend(left.quarantined);
    quarantined.extend(right.quarantined);

    remove_dropped(&mut images, dropped);
    Ok(Loaded {
        images,
        quarantined,
    })
}

/// Cuts `images` into each bucket's slots: the lower half's images, then
/// the upper half's.
fn split_slots<'a>(
    images: &'a mut [SnapshotEntry],
    lower: &[usize],
    upper: &[usize],
    buckets: Buckets,
) -> (Vec<Slots<'a>>, Vec<Slots<'a>>) {
    let mut lower_slots = Vec::with_capacity(buckets.count());
    let mut upper_slots = Vec::with_capacity(buckets.count());
    // The slice's length is the sum of the counts, so every split is
    // within it.
    let mut rest = images;
    let mut at = 0;
    for (a, b) in lower.iter().zip(upper) {
        let (mine, after) = rest.split_at_mut(*a);
        let (theirs, after) = after.split_at_mut(*b);
        lower_slots.push(Slots {
            start: at,
            entries: mine,
        });
        upper_slots.push(Slots {
            start: at + a,
            entries: theirs,
        });
        at += a + b;
        rest = after;
    }
    (lower_slots, upper_slots)
}

/// Removes the images at the positions in `dropped`. Only damage leaves
/// images to drop: undecodable records, and a second record for one image.
fn remove_dropped(images: &mut Vec<SnapshotEntry>, mut dropped: Vec<usize>) {
    if !dropped.is_empty() {
        dropped.sort_unstable();
        let mut position = 0;
        images.retain(|_| {
            let keep = dropped.binary_search(&position).is_err();
            position += 1;
            keep
        });
    }
}

/// Runs `a` and `b`, on two threads when `parallel`.
fn both<A: Send, B: Send>(
    parallel: bool,
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    if !parallel {
        return (a(), b());
    }
    std::thread::scope(|scope| {
        let b = scope.spawn(b);
        let a = a();
        let b = b
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (a, b)
    })
}

/// How images are put in buckets: by this many leading bits of the ID.
#[derive(Debug, Clone, Copy)]
struct Buckets {
    bits: u32,
}

impl Buckets {
    /// Buckets of about [`BUCKET_TARGET`] images each, and at least two,
    /// so that each thread sorts half of them.
    fn for_images(images: u64) -> Self {
        let wanted = usize::try_from(images)
            .unwrap_or(usize::MAX)
            .div_ceil(BUCKET_TARGET)
            .max(2);
        Self {
            bits: wanted.next_power_of_two().ilog2().min(MAX_BUCKET_BITS),
        }
    }

    fn count(self) -> usize {
        1 << self.bits
    }

    /// The bucket of an image: the leading bits of its ID.
    fn of(self, key: &ImageKey) -> usize {
        usize::from(u16::from_be_bytes([key[0], key[1]]) >> (16 - self.bits))
    }
}

/// The first eight bytes of an ID, as a number that sorts as the ID does.
fn prefix(id: &ImageId) -> u64 {
    let bytes = id.to_bytes();
    let mut head = [0u8; 8];
    head.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(head)
}

/// A slot's content until its record is decoded into it.
fn placeholder() -> SnapshotEntry {
    SnapshotEntry {
        id: ImageId::from_bytes([0; 32]),
        metadata: Vec::new(),
        summary: None,
    }
}

/// Blocks copied out of the database, and their images counted per bucket.
struct Copied {
    blocks: Vec<Bytes>,
    counts: Vec<usize>,
    quarantined: Vec<Quarantined>,
}

fn copy_blocks(
    table: &redb::ReadOnlyTable<u64, &'static [u8]>,
    range: (Bound<u64>, Bound<u64>),
    buckets: Buckets,
) -> Result<Copied, Error> {
    let mut out = Copied {
        blocks: Vec::new(),
        counts: vec![0; buckets.count()],
        quarantined: Vec::new(),
    };
    for entry in table.range::<u64>(range)? {
        let (number, value) = entry?;
        // Records keep slices of the copy, so it is made once per block.
        let data = Bytes::copy_from_slice(value.value());
        for item in block_entries(&data) {
            match item {
                Ok((key, _)) => out.counts[buckets.of(&key)] += 1,
                Err(err) => out.quarantined.push(Quarantined {
                    name: format!("index block {}", number.value()),
                    reason: format!(
                        "index block cannot be decoded ({err}); the images after the damage are not listed"
                    ),
                }),
            }
        }
        out.blocks.push(data);
    }
    Ok(out)
}

/// One half's share of one bucket: slots of the image vector, the first
/// of which is at `start`.
struct Slots<'a> {
    start: usize,
    entries: &'a mut [SnapshotEntry],
}

/// Records that could not be decoded: where their slots are, and why.
#[derive(Default)]
struct Failed {
    positions: Vec<usize>,
    quarantined: Vec<Quarantined>,
}

/// Decodes the records of `blocks` into the slots counted for them.
fn decode(blocks: &[Bytes], mut slots: Vec<Slots<'_>>, buckets: Buckets) -> Failed {
    let mut failed = Failed::default();
    let mut next = vec![0usize; buckets.count()];
    for data in blocks {
        // The entries are the ones counted from these same bytes; damage
        // after them was reported then.
        for (key, range) in block_entries(data).map_while(Result::ok) {
            let b = buckets.of(&key);
            let Some(share) = slots.get_mut(b) else {
                continue;
            };
            let position = share.start + next[b];
            let Some(slot) = share.entries.get_mut(next[b]) else {
                continue;
            };
            next[b] += 1;
            let id = ImageId::from_bytes(key);
            match Record::decode_at(data, range) {
                Ok(record) => {
                    *slot = SnapshotEntry {
                        id,
                        metadata: record.metadata,
                        summary: record.summary,
                    };
                }
                // A damaged record is reported, not skipped: the image stays
                // in place until the store decides what to do with it.
                Err(err) => {
                    slot.id = id;
                    failed.positions.push(position);
                    failed.quarantined.push(Quarantined {
                        name: id.to_string(),
                        reason: format!("index record cannot be decoded ({err}); left in place"),
                    });
                }
            }
        }
    }
    failed
}

/// Images to leave out of the list, by position after sorting.
#[derive(Default)]
struct Sorted {
    dropped: Vec<usize>,
    quarantined: Vec<Quarantined>,
}

/// Sorts each bucket of `images`, whose sizes are `sizes` and whose first
/// image is at `base` of the whole list. `failed` lists the positions,
/// before sorting, of slots whose records could not be decoded.
fn sort_buckets(
    images: &mut [SnapshotEntry],
    base: usize,
    sizes: &[usize],
    failed: &[usize],
) -> Sorted {
    let mut sorted = Sorted::default();
    let mut order: Vec<(u64, u32)> = Vec::new();
    let mut rest = images;
    let mut start = base;
    for &size in sizes {
        let (region, after) = rest.split_at_mut(size);
        sort_bucket(region, start, failed, &mut order, &mut sorted);
        start += size;
        rest = after;
    }
    sorted
}

/// Sorts one bucket by ID, noting what to drop: the slots of `failed`
/// records, and every image after the first with the same ID, which only
/// damage can cause.
fn sort_bucket(
    region: &mut [SnapshotEntry],
    start: usize,
    failed: &[usize],
    order: &mut Vec<(u64, u32)>,
    sorted: &mut Sorted,
) {
    // Sorting (prefix, index) pairs and then moving each entry once costs
    // far less than sorting the entries themselves. A bucket never holds
    // 2^32 images: that is beyond what the blocks could be read into.
    order.clear();
    order.extend(
        region
            .iter()
            .enumerate()
            .map(|(i, e)| (prefix(&e.id), i as u32)),
    );
    order.sort_unstable();
    // IDs sharing a 64-bit prefix never occur by chance, but two configs can
    // be crafted to; such a run is put in full-ID order.
    let mut run = 0;
    while run < order.len() {
        let mut end = run + 1;
        while end < order.len() && order[end].0 == order[run].0 {
            end += 1;
        }
        if end - run > 1 {
            order[run..end].sort_by(|a, b| {
                region[a.1 as usize]
                    .id
                    .cmp(&region[b.1 as usize].id)
                    .then(a.1.cmp(&b.1))
            });
        }
        run = end;
    }

    let mut kept: Option<ImageId> = None;
    for (at, &(_, i)) in order.iter().enumerate() {
        let i = i as usize;
        if !failed.is_empty() && failed.binary_search(&(start + i)).is_ok() {
            sorted.dropped.push(start + at);
            continue;
        }
        let id = region[i].id;
        if kept == Some(id) {
            sorted.dropped.push(start + at);
            sorted.quarantined.push(Quarantined {
                name: id.to_string(),
                reason: "a second index record for this image was ignored".into(),
            });
        } else {
            kept = Some(id);
        }
    }
    permute(region, order);
}

/// Rearranges `region` so that position `i` holds the entry that was at
/// `order[i].1`, moving each entry once. Consumes the indices in `order`.
fn permute(region: &mut [SnapshotEntry], order: &mut [(u64, u32)]) {
    const DONE: u32 = u32::MAX;
    for first in 0..order.len() {
        if order[first].1 == DONE {
            continue;
        }
        // Follow the cycle through `first`: each position takes the entry
        // its order names, which is still in its original place until the
        // cycle closes.
        let mut at = first;
        loop {
            let from = order[at].1 as usize;
            order[at].1 = DONE;
            if from == first {
                break;
            }
            region.swap(at, from);
            at = from;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: ImageKey, tag: u8) -> SnapshotEntry {
        SnapshotEntry {
            id: ImageId::from_bytes(key),
            metadata: Vec::new(),
            summary: Some(Bytes::from(vec![tag])),
        }
    }

    fn sort_one(mut region: Vec<SnapshotEntry>, failed: &[usize]) -> (Vec<SnapshotEntry>, Sorted) {
        let mut sorted = Sorted::default();
        let mut order = Vec::new();
        sort_bucket(&mut region, 0, failed, &mut order, &mut sorted);
        (region, sorted)
    }

    #[test]
    fn permute_moves_every_entry_where_its_order_says() {
        // A permutation with cycles of several lengths and fixed points.
        let n = 97u32;
        let perm: Vec<u32> = (0..n).map(|i| (i * 31 + 7) % n).collect();
        let mut region: Vec<SnapshotEntry> = (0..n)
            .map(|i| {
                let mut k = [0u8; 32];
                k[31] = i as u8;
                entry(k, i as u8)
            })
            .collect();
        let before = region.clone();
        let mut order: Vec<(u64, u32)> = perm.iter().map(|&p| (0, p)).collect();
        permute(&mut region, &mut order);
        for (i, &p) in perm.iter().enumerate() {
            assert_eq!(region[i], before[p as usize], "position {i}");
        }
    }

    #[test]
    fn ids_sharing_a_prefix_are_ordered_by_the_whole_id() {
        // Keys equal in their first 8 bytes, differing later, mixed with
        // keys that differ early.
        let mut keys: Vec<ImageKey> = (0..40u8)
            .map(|i| {
                let mut k = [7u8; 32];
                k[31] = i.wrapping_mul(37);
                k[20] = i % 3;
                k
            })
            .collect();
        keys.extend((0..40u8).map(|i| [i.wrapping_mul(101); 32]));
        let region: Vec<_> = keys.iter().map(|k| entry(*k, 0)).collect();
        let (out, sorted) = sort_one(region, &[]);
        assert!(sorted.dropped.is_empty());
        let got: Vec<ImageKey> = out.iter().map(|e| e.id.to_bytes()).collect();
        let mut want = keys.clone();
        want.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    fn repeats_and_failed_records_are_dropped_after_sorting() {
        let region = vec![
            entry([5; 32], 0),
            entry([3; 32], 1),
            entry([3; 32], 2),
            entry([1; 32], 3),
            entry([4; 32], 4),
        ];
        // The record at position 4 (ID 4) could not be decoded.
        let (out, sorted) = sort_one(region, &[4]);
        let ids: Vec<u8> = out.iter().map(|e| e.id.to_bytes()[0]).collect();
        assert_eq!(ids, [1, 3, 3, 4, 5]);
        // The second 3 (the later record) and the failed 4 go.
        assert_eq!(sorted.dropped, [2, 3]);
        assert_eq!(out[1].summary.as_deref(), Some(&[1][..]));
        assert_eq!(sorted.quarantined.len(), 1);
        assert_eq!(
            sorted.quarantined[0].name,
            ImageId::from_bytes([3; 32]).to_string()
        );
    }

    #[test]
    fn buckets_follow_the_leading_bits() {
        let buckets = Buckets { bits: 10 };
        let mut k = [0u8; 32];
        assert_eq!(buckets.of(&k), 0);
        k[0] = 0xff;
        k[1] = 0xc0;
        assert_eq!(buckets.of(&k), 1023);
        k[1] = 0x3f;
        // Bits below the bucket's do not change it.
        assert_eq!(buckets.of(&k), 1020);
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        a[0] = 0x12;
        b[0] = 0x13;
        assert!(buckets.of(&a) < buckets.of(&b));
    }

    #[test]
    fn bucket_count_follows_the_store_size() {
        assert_eq!(Buckets::for_images(0).count(), 2);
        assert_eq!(Buckets::for_images(1000).count(), 2);
        assert_eq!(Buckets::for_images(100_000).count(), 8);
        assert_eq!(Buckets::for_images(1_000_000).count(), 64);
        assert_eq!(Buckets::for_images(u64::MAX).count(), 1 << MAX_BUCKET_BITS);
    }
}
