//! A batch as one PostgreSQL transaction (see [`super::pg_kv`]): each key's last write, one
//! `DELETE ... = ANY` and one upsert from `unnest` in key order, after the batch's
//! preconditions were checked under the rows' locks.

use std::collections::BTreeMap;

use liaison_core::storage::{Batch, BatchOp, StorageError};
use tokio_postgres::error::SqlState;

/// A batch as the statements of its transaction.
#[derive(Debug)]
pub(super) struct Plan {
    /// Keys expected to hold a value, in key order.
    present: Vec<(Vec<u8>, Vec<u8>)>,
    /// Keys expected absent, in key order.
    absent: Vec<Vec<u8>>,
    deletes: Vec<Vec<u8>>,
    put_keys: Vec<Vec<u8>>,
    put_values: Vec<Vec<u8>>,
}

/// Why a batch's transaction did not commit.
#[derive(Debug)]
pub(super) enum Failed {
    Conflict,
    Pg(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for Failed {
    fn from(e: tokio_postgres::Error) -> Self {
        Failed::Pg(e)
    }
}

impl Plan {
    pub(super) fn of(batch: Batch) -> Result<Self, StorageError> {
        let mut expected: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for (key, want) in batch.expectations() {
            // Two different expectations of one key cannot both hold.
            if expected.insert(key.clone(), want.clone()).is_some_and(|earlier| earlier != *want) {
                return Err(StorageError::Conflict);
            }
        }
        let mut last: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for op in batch.into_ops() {
            match op {
                BatchOp::Put(key, value) => last.insert(key, Some(value)),
                BatchOp::Delete(key) => last.insert(key, None),
            };
        }
        let mut plan = Plan {
            present: Vec::new(),
            absent: Vec::new(),
            deletes: Vec::new(),
            put_keys: Vec::new(),
            put_values: Vec::new(),
        };
        for (key, want) in expected {
            match want {
                Some(value) => plan.present.push((key, value)),
                None => {
                    // The placeholder goes again unless the batch writes the key.
                    last.entry(key.clone()).or_insert(None);
                    plan.absent.push(key);
                }
            }
        }
        for (key, value) in last {
            match value {
                Some(value) => {
                    plan.put_keys.push(key);
                    plan.put_values.push(value);
                }
                None => plan.deletes.push(key),
            }
        }
        Ok(plan)
    }

    pub(super) async fn run(&self, client: &mut deadpool_postgres::Object) -> Result<(), Failed> {
        let tx = client.transaction().await?;
        match self.check(&tx).await {
            Ok(()) => {}
            Err(e) => {
                let _ = tx.rollback().await;
                return Err(e);
            }
        }
        if !self.deletes.is_empty() {
            let statement = tx.prepare_cached("DELETE FROM kv WHERE key = ANY($1)").await?;
            tx.execute(&statement, &[&self.deletes]).await?;
        }
        if !self.put_keys.is_empty() {
            let statement = tx
                .prepare_cached(
                    "INSERT INTO kv (key, value) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                )
                .await?;
            tx.execute(&statement, &[&self.put_keys, &self.put_values]).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The preconditions, under the rows' locks; nothing is written unless all hold.
    async fn check(&self, tx: &deadpool_postgres::Transaction<'_>) -> Result<(), Failed> {
        if !self.present.is_empty() {
            let keys: Vec<&[u8]> = self.present.iter().map(|(k, _)| k.as_slice()).collect();
            let statement =
                tx.prepare_cached("SELECT key, value FROM kv WHERE key = ANY($1) ORDER BY key FOR UPDATE").await?;
            let rows = tx.query(&statement, &[&keys]).await?;
            if rows.len() != keys.len() {
                return Err(Failed::Conflict);
            }
            for (row, (key, want)) in rows.iter().zip(&self.present) {
                let (got_key, got_value): (&[u8], &[u8]) = (row.try_get(0)?, row.try_get(1)?);
                if got_key != key.as_slice() || got_value != want.as_slice() {
                    return Err(Failed::Conflict);
                }
            }
        }
        if !self.absent.is_empty() {
            // A key someone else is inserting makes this wait for their commit, then conflict.
            let statement = tx
                .prepare_cached(
                    "INSERT INTO kv (key, value) SELECT k, ''::bytea FROM unnest($1::bytea[]) AS k ORDER BY k \
                     ON CONFLICT (key) DO NOTHING",
                )
                .await?;
            let inserted = tx.execute(&statement, &[&self.absent]).await?;
            if inserted != self.absent.len() as u64 {
                return Err(Failed::Conflict);
            }
        }
        Ok(())
    }
}

/// Aborted whole by PostgreSQL, so trying again writes nothing twice.
pub(super) fn is_retryable(e: &tokio_postgres::Error) -> bool {
    matches!(e.code(), Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_becomes_each_keys_last_write_and_placeholders_go_again() {
        let mut b = Batch::new();
        b.put(b"k".to_vec(), b"1".to_vec())
            .delete(b"k".to_vec())
            .put(b"j".to_vec(), b"2".to_vec())
            .delete(b"gone".to_vec())
            .put(b"k".to_vec(), b"3".to_vec())
            .expect(b"new".to_vec(), None)
            .expect(b"j".to_vec(), None)
            .expect(b"old".to_vec(), Some(b"x".to_vec()));
        let plan = Plan::of(b).unwrap();
        assert_eq!(plan.put_keys, [b"j".to_vec(), b"k".to_vec()]);
        assert_eq!(plan.put_values, [b"2".to_vec(), b"3".to_vec()]);
        assert_eq!(plan.deletes, [b"gone".to_vec(), b"new".to_vec()]);
        assert_eq!(plan.absent, [b"j".to_vec(), b"new".to_vec()]);
        assert_eq!(plan.present, [(b"old".to_vec(), b"x".to_vec())]);

        let mut contradictory = Batch::new();
        contradictory.expect(b"a".to_vec(), None).expect(b"a".to_vec(), Some(vec![]));
        assert!(matches!(Plan::of(contradictory), Err(StorageError::Conflict)));
    }
}
