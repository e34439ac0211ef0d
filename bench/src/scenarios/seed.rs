//! Writing a known data set before a measurement, where any refusal aborts the scenario.

use super::{settle, BatchBuilder, Ctx, FAILURE_GRACE};
use crate::error::BenchError;
use crate::in_flight::{InFlight, SentBatch};
use rmpv::Value;
use std::time::{Duration, Instant};

/// How seeding went.
#[derive(Debug, Clone, Copy)]
pub struct Seeded {
    /// Records written (all acknowledged).
    pub ops: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// Writes `entries` to `map_name` over `connections` connections in batches of `batch_size`,
/// each batch waiting for its OP_ACK. `role` names the writers' HLC node ids.
pub async fn seed(
    ctx: &Ctx,
    map_name: &str,
    entries: Vec<(String, Value)>,
    batch_size: usize,
    connections: usize,
    role: &str,
) -> Result<Seeded, BenchError> {
    if batch_size == 0 || connections == 0 {
        return Err(BenchError::InvalidOption(
            "seeding needs a batch size and connections of at least 1".into(),
        ));
    }
    let total = entries.len() as u64;
    let mut shares: Vec<Vec<(String, Value)>> = (0..connections).map(|_| Vec::new()).collect();
    for (i, e) in entries.into_iter().enumerate() {
        shares[i % connections].push(e);
    }
    let conns = ctx.connect_many(connections).await?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, (mut conn, share)) in conns.into_iter().zip(shares).enumerate() {
        let mut builder = BatchBuilder::new(ctx.node_id(role, i), map_name.to_string());
        let timeout = ctx.response_timeout;
        let map_name = map_name.to_string();
        tasks.push(tokio::spawn(async move {
            let mut tracker = InFlight::new(None, timeout, FAILURE_GRACE);
            let mut rest = share.into_iter().peekable();
            while rest.peek().is_some() {
                let (msg, first_id, last_id) = builder.batch(rest.by_ref().take(batch_size));
                tracker.sent(SentBatch {
                    first_id,
                    last_id,
                    sent_at: Instant::now(),
                });
                conn.send(&msg).await?;
                let settled = settle(&mut conn.reader, &mut tracker).await;
                let failure = settled
                    .outcomes
                    .iter()
                    .flat_map(|o| o.failures.iter())
                    .chain(settled.unattributed.iter())
                    .next();
                if let Some(f) = failure {
                    return Err(BenchError::Setup(format!(
                        "writing {map_name} was refused: {}: {}",
                        f.kind, f.detail
                    )));
                }
            }
            conn.close().await;
            Ok::<(), BenchError>(())
        }));
    }
    for task in tasks {
        task.await
            .map_err(|e| BenchError::Setup(format!("seeding task: {e}")))??;
    }
    Ok(Seeded {
        ops: total,
        elapsed: start.elapsed(),
    })
}
