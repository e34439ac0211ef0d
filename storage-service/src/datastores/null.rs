//! The null store: keeps nothing. Used by `test-server` and tests, where the data lives
//! only in the sync shards' memory.

use super::DataStore;
use crate::error::StorageError;
use crate::model::{MapCount, MapCursor, Mutation, Record, RecordKind};

/// A [`DataStore`] that accepts every write and stores nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullDataStore;

impl NullDataStore {
    /// The null store.
    pub fn new() -> Self {
        NullDataStore
    }
}

#[tonic::async_trait]
impl DataStore for NullDataStore {
    async fn initialize(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// Succeeds and reports 0 rows written: nothing was kept.
    async fn write_batch(&self, _mutations: Vec<Mutation>) -> Result<u64, StorageError> {
        Ok(0)
    }

    async fn load_keys(
        &self,
        _map_name: &str,
        _kind: RecordKind,
        _keys: &[String],
    ) -> Result<Vec<Record>, StorageError> {
        Ok(Vec::new())
    }

    async fn load_map(
        &self,
        _map_name: Option<&str>,
        _partitions: &[u32],
        _after: Option<&MapCursor>,
        _page_size: u32,
    ) -> Result<Vec<Record>, StorageError> {
        Ok(Vec::new())
    }

    async fn list_maps(&self) -> Result<Vec<MapCount>, StorageError> {
        Ok(Vec::new())
    }

    async fn delete_expired(&self, _now_ms: u64) -> Result<u64, StorageError> {
        Ok(0)
    }

    fn backend_name(&self) -> &'static str {
        "null"
    }
}
