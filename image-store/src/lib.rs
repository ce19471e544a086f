#![doc = include_str!("../README.md")]

mod error;
mod filter;
mod layers;
pub mod leases;
pub mod metric_names;
mod names;
mod options;
mod report;
mod search;
mod state;
mod store;
mod summary;

pub use error::{Error, Result};
pub use filter::ImageFilter;
pub use layers::{LayerError, LayerProvider, RefCountLayers};
pub use leases::{Held, LeaseGuard, LeaseOptions};
pub use options::{CreateOptions, DEFAULT_MAX_CONFIG_SIZE, StoreOptions};
pub use report::{Candidate, ImageInfo, OpenReport, Problem};
pub use store::Store;
