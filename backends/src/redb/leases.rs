//! Leases: the `leases` table, lease ID → the record [`Lease::encode`](imagecache_core::Lease::encode)
//! writes.
//!
//! A batch's lease changes go into the table in the batch's own write
//! transaction, in order, so they commit or vanish with the rest of it.
//! A renewal rewrites one small value.
//!
//! A value that does not decode as the lease its key names is damaged and
//! handled as every persistent backend handles one (see `leases.rs` at the
//! crate root): reported by a load, refused by `leases`. A key that is not
//! a lease ID is reported by a load only: no lease can be stored there, so
//! none is missing from the list.

use imagecache_core::LeaseId;
use redb::TableDefinition;

use super::{Error, NAME};
use crate::leases::LeaseList;

/// Lease ID → encoded lease record.
pub(super) const LEASES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("leases");

/// Reads every lease of the table.
pub(super) fn read(
    table: &impl redb::ReadableTable<&'static str, &'static [u8]>,
) -> Result<LeaseList, Error> {
    let mut out = LeaseList::default();
    for entry in table.iter()? {
        let (key, value) = entry?;
        let key = key.value();
        let name = format!("{NAME} leases entry {key:?}");
        match LeaseId::new(key) {
            Ok(id) => out.add(&name, &id, value.value()),
            Err(e) => out.misnamed(&name, e.to_string()),
        }
    }
    Ok(out)
}
