#![doc = include_str!("../README.md")]

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use imagecache_core::{BlobBackend, ImageId, StoreBackend};

mod check;
mod harness;
mod runner;

pub mod backend;
pub mod blob_cache;
pub mod blobs;
pub mod cache;
mod docker_compare;
pub mod docker_fs;
mod docker_image;
pub mod evidence;
pub mod faults;
pub mod leases;
pub mod names;
mod s3_env;
pub mod store;

pub use harness::{Damage, Fixture, Harness, HookError, HookResult, IntoHarness, Kinds};
pub use runner::{
    CaseResult, CaseStatus, DEFAULT_TIMEOUT, Progress, Report, RunOptions, run_all, run_cases,
    run_with,
};
pub use s3_env::s3_test_url;

/// The result of one case that did not fail. Failures panic with a message
/// that names what was expected and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every assertion held.
    Passed,
    /// The case does not apply to this backend.
    Skipped {
        /// The capability or hook that is missing.
        reason: String,
    },
}

impl Outcome {
    /// A skip naming the missing capability; prints `skipped: <case> (<reason>)`.
    pub fn skipped(case: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        eprintln!("skipped: {case} ({reason})");
        Self::Skipped { reason }
    }
}

/// How a [`Case`] runs.
#[derive(Clone, Copy)]
pub enum CaseFn {
    /// A case that needs backends from a [`Harness`].
    Harness(fn(Arc<dyn Harness>) -> BoxFuture<'static, Outcome>),
    /// A case about pure logic (parsing, comparison rules) that needs no
    /// backend; it runs on the blocking pool.
    Pure(fn() -> Outcome),
}

impl std::fmt::Debug for CaseFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Harness(_) => "CaseFn::Harness",
            Self::Pure(_) => "CaseFn::Pure",
        })
    }
}

/// One named case of the suite.
#[derive(Clone, Copy)]
pub struct Case {
    /// The case's name, as in the `# Behavior` lists.
    pub name: &'static str,
    /// The group it belongs to (`backend`, `docker`, …).
    pub group: &'static str,
    /// Runs the case.
    pub run: CaseFn,
}

impl Case {
    /// `group::name`, the string [`RunOptions::with_filter`] matches.
    pub fn full_name(&self) -> String {
        format!("{}::{}", self.group, self.name)
    }

    /// Whether the case uses backends from the harness.
    pub fn needs_backend(&self) -> bool {
        matches!(self.run, CaseFn::Harness(_))
    }
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case")
            .field("name", &self.name)
            .field("group", &self.group)
            .field("run", &self.run)
            .finish()
    }
}

/// A fresh fixture and its image backend, for a case of an image group.
///
/// The runner skips image cases when the harness offers no images, so a
/// fixture without a store here is the harness contradicting itself.
pub(crate) async fn images(h: &Arc<dyn Harness>) -> (Box<dyn Fixture>, Arc<dyn StoreBackend>) {
    let fixture = h.fixture().await;
    match fixture.store() {
        Some(store) => (fixture, store),
        None => panic!("the harness says it offers images, but its fixture has no store"),
    }
}

/// A fresh fixture and its blob backend, for a case of a blob group.
pub(crate) async fn blobs(h: &Arc<dyn Harness>) -> (Box<dyn Fixture>, Arc<dyn BlobBackend>) {
    let fixture = h.fixture().await;
    match fixture.blobs() {
        Some(blobs) => (fixture, blobs),
        None => panic!("the harness says it offers blobs, but its fixture has no blob backend"),
    }
}

/// Replaces an image's stored config through the fixture's hook; `false`
/// when the fixture has none. A hook that is offered but fails fails the case.
pub(crate) async fn corrupt_config(fixture: &dyn Fixture, id: &ImageId, data: Bytes) -> bool {
    if !fixture.damage().config {
        return false;
    }
    if let Err(e) = fixture.corrupt_config(id, data).await {
        panic!("corrupt_config of {id}: {e}");
    }
    true
}

/// A second image backend on the fixture's namespace, if it can reopen.
pub(crate) async fn reopen_images(fixture: &dyn Fixture) -> Option<Arc<dyn StoreBackend>> {
    fixture.reopen().await?.store()
}

/// A pure case as its module lists it: name and function.
type PureCase = (&'static str, fn() -> Outcome);

/// Wraps the pure cases of a module as cases of `group`.
fn pure(group: &'static str, cases: &[PureCase]) -> Vec<Case> {
    cases
        .iter()
        .map(|&(name, run)| Case {
            name,
            group,
            run: CaseFn::Pure(run),
        })
        .collect()
}

/// Every case of every group, in a stable order: `backend`, `names`,
/// `leases`, `blobs`, `docker`, then the store and cache groups.
///
/// A new group is a module with a `CASES` list and a hidden
/// `__<group>_cases!` macro listing the same names (see `backend.rs`), one
/// line here and one line in the `__all_groups!` macro that
/// [`backend_tests!`] expands; a test checks that the two lists agree.
pub fn cases() -> Vec<Case> {
    let mut all: Vec<Case> = Vec::new();
    all.extend_from_slice(backend::CASES);
    all.extend_from_slice(names::CASES);
    all.extend_from_slice(leases::CASES);
    all.extend_from_slice(blobs::CASES);
    all.extend_from_slice(docker_fs::CASES);
    all.extend_from_slice(store::CASES);
    all.extend_from_slice(cache::CASES);
    all.extend_from_slice(blob_cache::CASES);
    all.extend(pure("docker", docker_image::CASES));
    all.extend(pure("docker", docker_compare::CASES));
    all
}

/// Expands to one `#[test]` per case of the suite, run over backends from
/// the given [`Harness`].
///
/// Call it inside a test module. Each generated test is named after its
/// case (so `cargo test put_then_get` selects one), builds its own
/// multi-thread tokio runtime, evaluates the harness expression inside it
/// (the expression may `.await`), and runs the case with
/// [`DEFAULT_TIMEOUT`]. A case that does not apply prints
/// `skipped: <case> (<reason>)` and passes.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use imagecache_core::{BlobBackend, StoreBackend};
/// # use imagecache_backends::MemoryBackend;
/// use imagecache_conformance::{Fixture, Harness};
///
/// struct MyHarness;
/// struct MyFixture(MemoryBackend);
///
/// #[async_trait::async_trait]
/// impl Harness for MyHarness {
///     async fn fixture(&self) -> Box<dyn Fixture> {
///         Box::new(MyFixture(MemoryBackend::new()))
///     }
/// }
///
/// #[async_trait::async_trait]
/// impl Fixture for MyFixture {
///     fn store(&self) -> Option<Arc<dyn StoreBackend>> {
///         Some(Arc::new(self.0.clone()))
///     }
///     fn blobs(&self) -> Option<Arc<dyn BlobBackend>> {
///         Some(Arc::new(self.0.clone()))
///     }
///     async fn reopen(&self) -> Option<Box<dyn Fixture>> {
///         Some(Box::new(MyFixture(self.0.clone())))
///     }
///     // No damage hooks: the cases that need one are skipped, saying so.
/// }
///
/// // In a test file such as `tests/conformance.rs`:
/// imagecache_conformance::backend_tests!(MyHarness);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! backend_tests {
    ($harness:expr $(,)?) => {
        $crate::__all_groups!(__case_tests!($harness));
    };
}

/// Hands the case list of every group to `$then`. A new group is one line
/// here (and one in [`cases`]).
#[doc(hidden)]
#[macro_export]
macro_rules! __all_groups {
    ($then:ident ! ( $($args:tt)* )) => {
        $crate::__backend_cases!($then!($($args)*));
        $crate::__names_cases!($then!($($args)*));
        $crate::__leases_cases!($then!($($args)*));
        $crate::__blobs_cases!($then!($($args)*));
        $crate::__docker_cases!($then!($($args)*));
        $crate::__store_cases!($then!($($args)*));
        $crate::__cache_cases!($then!($($args)*));
        $crate::__blob_cache_cases!($then!($($args)*));
    };
}

/// Lists the `docker` group's cases for the macros.
#[doc(hidden)]
#[macro_export]
macro_rules! __docker_cases {
    ($then:ident ! ( $($args:tt)* )) => {
        $crate::$then! { ($($args)*) docker [
            fs_get_invalid_data,
            fs_invalid_set,
            fs_invalid_root,
            fs_metadata_get_set,
            fs_invalid_walker,
            fs_get_set,
            fs_get_unset_key,
            fs_get_empty_data,
            fs_delete,
            fs_walker,
            fs_walker_stop_on_error,
            new_from_json_keeps_raw_json,
            new_from_json_with_invalid_json,
            marshal_key_order,
            image_ids_and_defaults,
            image_os_not_empty,
            new_child_image_from_image_with_rootfs,
            compare,
            platform_compare,
        ] }
    };
}

/// One `#[test]` per listed case.
#[doc(hidden)]
#[macro_export]
macro_rules! __case_tests {
    (($harness:expr) $group:ident [ $($name:ident),* $(,)? ]) => {
        $(
            #[test]
            fn $name() {
                $crate::__private::run_test(
                    ::core::stringify!($group),
                    ::core::stringify!($name),
                    async { $crate::__private::into_harness($harness) },
                );
            }
        )*
    };
}

/// A `&[Case]` of harness cases whose functions are in scope.
#[doc(hidden)]
#[macro_export]
macro_rules! __case_registry {
    (() $group:ident [ $($name:ident),* $(,)? ]) => {
        &[$(
            $crate::Case {
                name: ::core::stringify!($name),
                group: ::core::stringify!($group),
                run: $crate::CaseFn::Harness(|h| ::std::boxed::Box::pin($name(h))),
            }
        ),*]
    };
}

/// Pushes `(group, name)` for every listed case onto the given `Vec`.
#[doc(hidden)]
#[macro_export]
macro_rules! __case_names {
    (($names:ident) $group:ident [ $($name:ident),* $(,)? ]) => {
        $(
            $names.push((::core::stringify!($group), ::core::stringify!($name)));
        )*
    };
}

/// Support for the macros; not part of the API.
#[doc(hidden)]
pub mod __private {
    use std::future::Future;
    use std::sync::Arc;

    use crate::{CaseStatus, DEFAULT_TIMEOUT, Harness};

    /// Puts a harness behind an `Arc`, or says why there is none.
    pub fn into_harness<H: crate::IntoHarness>(harness: H) -> Result<Arc<dyn Harness>, String> {
        harness.into_harness()
    }

    /// The body of one generated test: a runtime, the harness, the case.
    pub fn run_test<F>(group: &str, name: &str, harness: F)
    where
        F: Future<Output = Result<Arc<dyn Harness>, String>>,
    {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(err) => panic!("cannot start a tokio runtime for {group}::{name}: {err}"),
        };
        let Some(case) = crate::cases()
            .into_iter()
            .find(|c| c.group == group && c.name == name)
        else {
            panic!("{group}::{name} is listed by the test macro but not registered");
        };
        let result = runtime.block_on(async {
            match harness.await {
                Ok(harness) => Some(crate::runner::run_one(&case, harness, DEFAULT_TIMEOUT).await),
                Err(reason) => {
                    crate::Outcome::skipped(name, reason);
                    None
                }
            }
        });
        let Some(result) = result else {
            return;
        };
        if let CaseStatus::Failed { reason } = result.status {
            panic!("{group}::{name} failed: {reason}");
        }
    }
}

#[cfg(test)]
mod tests;
