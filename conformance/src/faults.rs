//! Fault injection: wrappers for [`StoreBackend`] and [`BlobBackend`] that
//! make calls fail on a seeded, reproducible plan.
//!
//! A [`FaultInjector`] decides, call by call, whether the call goes through
//! untouched or meets a [`FaultKind`]: an error before the backend sees the
//! call (nothing applied), an error after the backend has done the work
//! (applied, yet the caller sees a failure), a blob read that stops short or
//! fails part way, a blob write whose body fails part way (a torn write),
//! or a delay. It fails the Nth call ([`FaultConfig::with_nth`]), each call
//! with probability `p` ([`FaultConfig::with_rate`]), or both. The same
//! seed and the same sequence of calls inject the same faults.
//!
//! [`FaultStore`] and [`FaultBlobStore`] wrap a backend each and share one
//! injector, so one plan covers a backend that keeps images and blobs:
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use imagecache_backends::MemoryBackend;
//! use imagecache_conformance::faults::{
//!     FaultBlobStore, FaultConfig, FaultInjector, FaultKind, FaultStore, is_injected,
//! };
//! use imagecache_core::{StoreBackend, StoreBackendExt as _};
//!
//! let memory = MemoryBackend::new();
//! // Fail the second call, before it reaches the backend.
//! let faults = FaultInjector::new(
//!     FaultConfig::new(7).with_nth(2).with_kinds(&[FaultKind::ErrorBefore]),
//! );
//! let store = FaultStore::new(Arc::new(memory.clone()), faults.clone());
//! let _blobs = FaultBlobStore::new(Arc::new(memory.clone()), faults.clone());
//!
//! let id = store.put(bytes::Bytes::from_static(b"{}")).await?;
//! let err = store.get(&id).await.unwrap_err();
//! assert!(is_injected(&err));
//! assert_eq!(store.get(&id).await?, bytes::Bytes::from_static(b"{}"));
//! assert_eq!(faults.stats().injected, 1);
//! # Ok::<(), imagecache_core::Error>(())
//! # }).unwrap();
//! ```
//!
//! Every injected error is [`Error::Backend`] with backend `"faults"`,
//! marked retryable, whose source is an [`InjectedFault`] naming the call,
//! the method and the kind; [`is_injected`] finds it in any error chain, so
//! a test can tell an injected failure from a real one.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use imagecache_core::{
    BlobBackend, BlobInfo, BlobNotes, BlobReader, ByteStream, Capabilities, Compaction, Digest,
    Error, ImageId, Lease, MetadataKey, Result, Scratch, Snapshot, StoreBackend, Timestamp, Usage,
    WriteBatch,
};

/// The backend name injected errors carry in [`Error::Backend`].
pub const BACKEND: &str = "faults";

/// What an injected fault does to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum FaultKind {
    /// The call fails before the backend sees it: nothing is applied.
    ErrorBefore,
    /// The backend runs the call to its end, then the caller gets an error
    /// instead of the result: a write is applied although it "failed", as
    /// when a connection drops after the server committed.
    ErrorAfter,
    /// A blob read ([`BlobBackend::get_blob`]) ends early without an error,
    /// after fewer bytes than the size it announced.
    ShortRead,
    /// A blob read fails part way with an error.
    ReadError,
    /// A blob write ([`BlobBackend::put_blob`]) has its body fail part way,
    /// after some bytes: the backend must store nothing.
    TornWrite,
    /// The call waits (up to [`FaultConfig::max_delay`]), then proceeds
    /// normally.
    Delay,
}

impl FaultKind {
    /// Every kind, in declaration order.
    pub const ALL: [Self; 6] = [
        Self::ErrorBefore,
        Self::ErrorAfter,
        Self::ShortRead,
        Self::ReadError,
        Self::TornWrite,
        Self::Delay,
    ];

    /// The kinds that make a call fail (all but [`FaultKind::Delay`]).
    pub const FAILURES: [Self; 5] = [
        Self::ErrorBefore,
        Self::ErrorAfter,
        Self::ShortRead,
        Self::ReadError,
        Self::TornWrite,
    ];

    /// A short snake-case name: `error_before`, `torn_write`, …
    pub fn name(self) -> &'static str {
        match self {
            Self::ErrorBefore => "error_before",
            Self::ErrorAfter => "error_after",
            Self::ShortRead => "short_read",
            Self::ReadError => "read_error",
            Self::TornWrite => "torn_write",
            Self::Delay => "delay",
        }
    }

    /// Whether the kind can apply to a call of `method`: the stream kinds
    /// only to the blob read or write they cut, the others to any call.
    pub fn applies_to(self, method: Method) -> bool {
        match self {
            Self::ShortRead | Self::ReadError => method == Method::GetBlob,
            Self::TornWrite => method == Method::PutBlob,
            Self::ErrorBefore | Self::ErrorAfter | Self::Delay => true,
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A method of [`StoreBackend`] or [`BlobBackend`] that faults can hit.
/// [`StoreBackend::capabilities`] is never faulted: it does no I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
#[allow(missing_docs)] // Each variant is the trait method of the same name.
pub enum Method {
    Write,
    Get,
    GetMetadata,
    Load,
    Leases,
    Usage,
    Compact,
    PutBlob,
    GetBlob,
    HeadBlob,
    DeleteBlob,
    ListBlobs,
    SetBlobNotes,
    GetBlobNote,
    BlobNotes,
    Scratch,
    ListBlobTimes,
    BlobUsage,
}

impl Method {
    /// The trait method's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Write => "write",
            Self::Get => "get",
            Self::GetMetadata => "get_metadata",
            Self::Load => "load",
            Self::Leases => "leases",
            Self::Usage => "usage",
            Self::Compact => "compact",
            Self::PutBlob => "put_blob",
            Self::GetBlob => "get_blob",
            Self::HeadBlob => "head_blob",
            Self::DeleteBlob => "delete_blob",
            Self::ListBlobs => "list_blobs",
            Self::SetBlobNotes => "set_blob_notes",
            Self::GetBlobNote => "get_blob_note",
            Self::BlobNotes => "blob_notes",
            Self::Scratch => "scratch",
            Self::ListBlobTimes => "list_blob_times",
            Self::BlobUsage => "blob_usage",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error an injected fault raises, as the source of an
/// [`Error::Backend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InjectedFault {
    /// The call's number, counting from 1 over every call the injector
    /// has seen while active.
    pub call: u64,
    /// The method called.
    pub method: Method,
    /// What was injected.
    pub kind: FaultKind,
}

impl fmt::Display for InjectedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "injected fault {} in call {} ({})",
            self.kind, self.call, self.method
        )
    }
}

impl std::error::Error for InjectedFault {}

impl InjectedFault {
    /// The contract error the caller sees.
    pub fn into_error(self) -> Error {
        Error::Backend {
            backend: BACKEND,
            key: None,
            retryable: true,
            source: Box::new(self),
        }
    }
}

/// Whether an [`InjectedFault`] is anywhere in the chain of `err`.
pub fn is_injected(err: &(dyn std::error::Error + 'static)) -> bool {
    injected_fault(err).is_some()
}

/// The first [`InjectedFault`] in the chain of `err`, if any.
pub fn injected_fault<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a InjectedFault> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        if let Some(fault) = e.downcast_ref::<InjectedFault>() {
            return Some(fault);
        }
        next = e.source();
    }
    None
}

/// The plan a [`FaultInjector`] follows.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    seed: u64,
    rate: f64,
    nth: Option<u64>,
    kinds: Vec<FaultKind>,
    methods: Option<Vec<Method>>,
    max_delay: Duration,
}

impl FaultConfig {
    /// A plan that injects nothing until told to, drawing from `seed`.
    /// Every kind is enabled; delays are at most 2 ms.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            rate: 0.0,
            nth: None,
            kinds: FaultKind::ALL.to_vec(),
            methods: None,
            max_delay: Duration::from_millis(2),
        }
    }

    /// Injects a fault into each call with probability `rate` (clamped to
    /// `0.0..=1.0`; not a number counts as 0).
    #[must_use]
    pub fn with_rate(mut self, rate: f64) -> Self {
        self.rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        self
    }

    /// Injects a fault into the `n`th call (counting from 1), whatever the
    /// rate; 0 disables it.
    #[must_use]
    pub fn with_nth(mut self, n: u64) -> Self {
        self.nth = (n > 0).then_some(n);
        self
    }

    /// The kinds to draw from; a call gets one of those that apply to its
    /// method, or no fault when none does. An empty list injects nothing.
    #[must_use]
    pub fn with_kinds(mut self, kinds: &[FaultKind]) -> Self {
        let mut kinds = kinds.to_vec();
        kinds.sort_unstable();
        kinds.dedup();
        self.kinds = kinds;
        self
    }

    /// Injects faults only into calls of these methods (every method
    /// until this is called). Other calls are still counted.
    #[must_use]
    pub fn with_methods(mut self, methods: &[Method]) -> Self {
        self.methods = Some(methods.to_vec());
        self
    }

    /// The longest [`FaultKind::Delay`].
    #[must_use]
    pub fn with_max_delay(mut self, max: Duration) -> Self {
        self.max_delay = max;
        self
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The probability of a fault per call.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The call that fails whatever the rate, if any.
    pub fn nth(&self) -> Option<u64> {
        self.nth
    }

    /// The kinds drawn from.
    pub fn kinds(&self) -> &[FaultKind] {
        &self.kinds
    }

    /// The methods faults are injected into; `None` for all.
    pub fn methods(&self) -> Option<&[Method]> {
        self.methods.as_deref()
    }

    /// The longest delay.
    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }
}

/// What an injector has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FaultStats {
    /// Calls seen while active.
    pub calls: u64,
    /// Faults injected, delays included.
    pub injected: u64,
    /// Faults injected, by kind.
    pub by_kind: BTreeMap<FaultKind, u64>,
    /// Faults injected, by method.
    pub by_method: BTreeMap<Method, u64>,
    /// The last fault injected.
    pub last: Option<InjectedFault>,
}

impl FaultStats {
    /// Faults of `kind` injected so far.
    pub fn of_kind(&self, kind: FaultKind) -> u64 {
        self.by_kind.get(&kind).copied().unwrap_or(0)
    }

    /// Faults injected that make a call fail (delays left out).
    pub fn failures(&self) -> u64 {
        self.injected - self.of_kind(FaultKind::Delay)
    }
}

/// A fault drawn for one call, with the numbers it needs.
#[derive(Debug, Clone, Copy)]
struct Drawn {
    fault: InjectedFault,
    /// How long a delay lasts; where a stream is cut.
    amount: u64,
}

#[derive(Debug)]
struct Plan {
    config: FaultConfig,
    rng: SplitMix64,
    /// One-shot faults scheduled with [`FaultInjector::schedule`]: call
    /// number → the kind to inject (any applicable one when `None`).
    scheduled: BTreeMap<u64, Option<FaultKind>>,
    stats: FaultStats,
}

/// Decides which calls fail, and counts them; cheap to clone, and clones
/// share the plan. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct FaultInjector {
    plan: Arc<Mutex<Plan>>,
    active: Arc<AtomicBool>,
}

impl FaultInjector {
    /// An active injector following `config`.
    pub fn new(config: FaultConfig) -> Self {
        let mut scheduled = BTreeMap::new();
        if let Some(n) = config.nth {
            scheduled.insert(n, None);
        }
        Self {
            plan: Arc::new(Mutex::new(Plan {
                rng: SplitMix64(config.seed),
                config,
                scheduled,
                stats: FaultStats::default(),
            })),
            active: Arc::new(AtomicBool::new(true)),
        }
    }

    /// An injector that never injects anything (rate 0, no Nth call).
    pub fn disabled() -> Self {
        Self::new(FaultConfig::new(0))
    }

    /// The plan it follows.
    pub fn config(&self) -> FaultConfig {
        self.lock().config.clone()
    }

    /// Turns injection on or off. While off, calls go straight through
    /// and are not counted, so a test can inspect the backend through the
    /// wrappers without disturbing the plan.
    pub fn set_active(&self, active: bool) {
        self.active.store(active, Ordering::SeqCst);
    }

    /// Whether injection is on.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    /// Changes the probability of a fault per call from now on.
    pub fn set_rate(&self, rate: f64) {
        let mut plan = self.lock();
        plan.config = plan.config.clone().with_rate(rate);
    }

    /// Makes the `n`th call from now (1: the next one) fail with `kind`,
    /// or with any enabled kind that applies to it when `None`. A `kind`
    /// that does not apply to that call's method, or a method left out by
    /// [`FaultConfig::with_methods`], injects nothing.
    pub fn schedule(&self, n: u64, kind: Option<FaultKind>) {
        let mut plan = self.lock();
        let at = plan.stats.calls.saturating_add(n.max(1));
        plan.scheduled.insert(at, kind);
    }

    /// What it has injected so far.
    pub fn stats(&self) -> FaultStats {
        self.lock().stats.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Plan> {
        // The plan is a counter and a generator; a panic elsewhere cannot
        // leave it in a state worth refusing to read.
        self.plan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a call of `method` and decides its fault.
    fn draw(&self, method: Method) -> Option<Drawn> {
        if !self.is_active() {
            return None;
        }
        let mut plan = self.lock();
        plan.stats.calls += 1;
        let call = plan.stats.calls;
        let scheduled = plan.scheduled.remove(&call);
        // The generator advances on every call, so the faults drawn do not
        // depend on which calls were scheduled.
        let roll = plan.rng.unit();
        let pick = plan.rng.next();
        let amount = plan.rng.next();
        let kind = match scheduled {
            Some(Some(kind)) => {
                Some(kind).filter(|k| k.applies_to(method) && plan.config.allows(method))
            }
            Some(None) => plan.config.pick(method, pick),
            None if roll < plan.config.rate => plan.config.pick(method, pick),
            None => None,
        }?;
        let fault = InjectedFault { call, method, kind };
        let stats = &mut plan.stats;
        stats.injected += 1;
        *stats.by_kind.entry(kind).or_default() += 1;
        *stats.by_method.entry(method).or_default() += 1;
        stats.last = Some(fault);
        let amount = match kind {
            FaultKind::Delay => {
                let max = u64::try_from(plan.config.max_delay.as_micros()).unwrap_or(u64::MAX);
                amount % max.saturating_add(1)
            }
            _ => amount,
        };
        Some(Drawn { fault, amount })
    }

    /// Runs `call` under the fault drawn for `method`: an error before or
    /// after it, a delay before it, or nothing. Stream faults are the
    /// callers' to apply; here they let the call through.
    async fn around<T, F>(&self, method: Method, call: F) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        let Some(drawn) = self.draw(method) else {
            return call.await;
        };
        apply(drawn, call).await
    }
}

async fn apply<T, F>(drawn: Drawn, call: F) -> Result<T>
where
    F: Future<Output = Result<T>>,
{
    match drawn.fault.kind {
        FaultKind::ErrorBefore => Err(drawn.fault.into_error()),
        FaultKind::ErrorAfter => {
            // The outcome is dropped: the caller must not learn whether
            // the work was done.
            let _ = call.await;
            Err(drawn.fault.into_error())
        }
        FaultKind::Delay => {
            tokio::time::sleep(Duration::from_micros(drawn.amount)).await;
            call.await
        }
        FaultKind::ShortRead | FaultKind::ReadError | FaultKind::TornWrite => call.await,
    }
}

impl FaultConfig {
    /// Whether faults may hit calls of `method`.
    fn allows(&self, method: Method) -> bool {
        self.methods.as_ref().is_none_or(|m| m.contains(&method))
    }

    /// One of the enabled kinds that apply to `method`, picked by `pick`;
    /// none for a method left out by [`FaultConfig::with_methods`].
    fn pick(&self, method: Method, pick: u64) -> Option<FaultKind> {
        if !self.allows(method) {
            return None;
        }
        let n = self.kinds.iter().filter(|k| k.applies_to(method)).count();
        if n == 0 {
            return None;
        }
        let index = usize::try_from(pick % n as u64).unwrap_or(0);
        self.kinds
            .iter()
            .copied()
            .filter(|k| k.applies_to(method))
            .nth(index)
    }
}

/// A small, fast, seeded generator (SplitMix64): reproducible across
/// platforms and versions, which a generator from a crate need not be.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0.0..1.0`, from the top 53 bits.
    fn unit(&mut self) -> f64 {
        // 53 bits fit an f64's mantissa exactly.
        let top = (self.next() >> 11) as f64;
        top / (1u64 << 53) as f64
    }
}

/// A [`StoreBackend`] that injects faults into the calls it forwards.
#[derive(Debug, Clone)]
pub struct FaultStore {
    inner: Arc<dyn StoreBackend>,
    faults: FaultInjector,
}

impl FaultStore {
    /// Wraps `inner`; `faults` decides which calls fail.
    pub fn new(inner: Arc<dyn StoreBackend>, faults: FaultInjector) -> Self {
        Self { inner, faults }
    }

    /// The wrapped backend, to inspect it without faults.
    pub fn inner(&self) -> &Arc<dyn StoreBackend> {
        &self.inner
    }

    /// The injector.
    pub fn faults(&self) -> &FaultInjector {
        &self.faults
    }
}

impl fmt::Display for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "faults+{}", self.inner)
    }
}

#[async_trait::async_trait]
#[deny(clippy::missing_trait_methods)]
impl StoreBackend for FaultStore {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    /// Faults are injected above the wrapped backend's own measurements,
    /// so a store over this wrapper measures (and counts) them too.
    fn is_instrumented(&self) -> bool {
        false
    }

    async fn write(&self, batch: WriteBatch) -> Result<()> {
        self.faults
            .around(Method::Write, self.inner.write(batch))
            .await
    }

    async fn get(&self, id: &ImageId) -> Result<Bytes> {
        self.faults.around(Method::Get, self.inner.get(id)).await
    }

    async fn get_metadata(&self, id: &ImageId, key: &MetadataKey) -> Result<Bytes> {
        self.faults
            .around(Method::GetMetadata, self.inner.get_metadata(id, key))
            .await
    }

    async fn load(&self) -> Result<Snapshot> {
        self.faults.around(Method::Load, self.inner.load()).await
    }

    async fn leases(&self) -> Result<Vec<Lease>> {
        self.faults
            .around(Method::Leases, self.inner.leases())
            .await
    }

    async fn usage(&self) -> Result<Usage> {
        self.faults.around(Method::Usage, self.inner.usage()).await
    }

    async fn compact(&self) -> Result<Option<Compaction>> {
        self.faults
            .around(Method::Compact, self.inner.compact())
            .await
    }
}

/// A [`BlobBackend`] that injects faults into the calls it forwards,
/// including short reads and torn writes of blob bodies.
#[derive(Debug, Clone)]
pub struct FaultBlobStore {
    inner: Arc<dyn BlobBackend>,
    faults: FaultInjector,
}

impl FaultBlobStore {
    /// Wraps `inner`; `faults` decides which calls fail.
    pub fn new(inner: Arc<dyn BlobBackend>, faults: FaultInjector) -> Self {
        Self { inner, faults }
    }

    /// The wrapped backend, to inspect it without faults.
    pub fn inner(&self) -> &Arc<dyn BlobBackend> {
        &self.inner
    }

    /// The injector.
    pub fn faults(&self) -> &FaultInjector {
        &self.faults
    }
}

impl fmt::Display for FaultBlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "faults+{}", self.inner)
    }
}

/// Cuts a stream after `cut` bytes, then ends it (`fail: None`) or yields
/// the error (`fail: Some`); a stream shorter than `cut` ends the same way
/// at its end.
fn cut_stream(stream: ByteStream, cut: u64, fail: Option<InjectedFault>) -> ByteStream {
    struct Cut {
        stream: ByteStream,
        left: u64,
        fail: Option<InjectedFault>,
        done: bool,
    }
    let state = Cut {
        stream,
        left: cut,
        fail,
        done: false,
    };
    Box::pin(futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        let chunk = if s.left == 0 {
            None
        } else {
            match s.stream.next().await {
                Some(Ok(chunk)) => Some(chunk),
                Some(Err(e)) => {
                    s.done = true;
                    return Some((Err(e), s));
                }
                None => None,
            }
        };
        match chunk {
            Some(mut chunk) => {
                let keep = usize::try_from(s.left)
                    .unwrap_or(usize::MAX)
                    .min(chunk.len());
                chunk.truncate(keep);
                s.left -= keep as u64;
                Some((Ok(chunk), s))
            }
            None => {
                s.done = true;
                let fault = s.fail.take()?;
                Some((Err(fault.into_error()), s))
            }
        }
    }))
}

#[async_trait::async_trait]
#[deny(clippy::missing_trait_methods)]
impl BlobBackend for FaultBlobStore {
    /// As for [`FaultStore`]: the faults are measured above this wrapper.
    fn is_instrumented(&self) -> bool {
        false
    }

    async fn put_blob(&self, digest: &Digest, body: ByteStream) -> Result<BlobInfo> {
        let Some(drawn) = self.faults.draw(Method::PutBlob) else {
            return self.inner.put_blob(digest, body).await;
        };
        if drawn.fault.kind != FaultKind::TornWrite {
            return apply(drawn, self.inner.put_blob(digest, body)).await;
        }
        // Cut somewhere in the first 16 KiB, which is all of a small blob.
        let cut = drawn.amount % (16 << 10);
        let torn = cut_stream(body, cut, Some(drawn.fault));
        self.inner.put_blob(digest, torn).await
    }

    async fn get_blob(&self, digest: &Digest) -> Result<BlobReader> {
        let Some(drawn) = self.faults.draw(Method::GetBlob) else {
            return self.inner.get_blob(digest).await;
        };
        let fail = match drawn.fault.kind {
            FaultKind::ShortRead => None,
            FaultKind::ReadError => Some(drawn.fault),
            _ => return apply(drawn, self.inner.get_blob(digest)).await,
        };
        let reader = self.inner.get_blob(digest).await?;
        // Strictly fewer bytes than announced, so the read is always short
        // (an empty blob has nothing to cut, and just ends or fails).
        let cut = drawn.amount % reader.size.max(1);
        Ok(BlobReader {
            size: reader.size,
            stream: cut_stream(reader.stream, cut, fail),
        })
    }

    async fn head_blob(&self, digest: &Digest) -> Result<BlobInfo> {
        self.faults
            .around(Method::HeadBlob, self.inner.head_blob(digest))
            .await
    }

    async fn delete_blob(&self, digest: &Digest) -> Result<()> {
        self.faults
            .around(Method::DeleteBlob, self.inner.delete_blob(digest))
            .await
    }

    async fn list_blobs(&self) -> Result<Vec<BlobInfo>> {
        self.faults
            .around(Method::ListBlobs, self.inner.list_blobs())
            .await
    }

    async fn set_blob_notes(&self, digest: &Digest, notes: BlobNotes) -> Result<()> {
        self.faults
            .around(
                Method::SetBlobNotes,
                self.inner.set_blob_notes(digest, notes),
            )
            .await
    }

    async fn get_blob_note(&self, digest: &Digest, key: &MetadataKey) -> Result<Bytes> {
        self.faults
            .around(Method::GetBlobNote, self.inner.get_blob_note(digest, key))
            .await
    }

    async fn blob_notes(&self, digest: &Digest) -> Result<BlobNotes> {
        self.faults
            .around(Method::BlobNotes, self.inner.blob_notes(digest))
            .await
    }

    async fn scratch(&self) -> Result<Scratch> {
        self.faults
            .around(Method::Scratch, self.inner.scratch())
            .await
    }

    async fn list_blob_times(&self) -> Result<Vec<(BlobInfo, Option<Timestamp>)>> {
        self.faults
            .around(Method::ListBlobTimes, self.inner.list_blob_times())
            .await
    }

    async fn blob_usage(&self) -> Result<Usage> {
        self.faults
            .around(Method::BlobUsage, self.inner.blob_usage())
            .await
    }
}
