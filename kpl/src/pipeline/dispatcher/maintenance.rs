//! The dispatcher's scheduled work: shard map refreshes (on demand and periodic) and publishing
//! the rates of shards slowed by throttling.

use super::*;

/// Listings per map refresh before it is given up (the next use or tick starts another).
const REFRESH_ATTEMPTS: usize = 5;
/// The refresh back-off's first cap and its ceiling.
const REFRESH_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));

impl Dispatcher {
    /// Scheduled work: periodic map refreshes, and publishing the rates of slowed shards.
    pub(super) fn tick(&mut self, now: Instant) {
        let (records, bytes) = self.capacity.outstanding();
        kpl_metrics::pending(records, bytes);
        for entry in self.streams.all() {
            let last = *self.last_refresh.entry(entry.id.clone()).or_insert(now);
            if now.saturating_duration_since(last) >= self.config.shard_map_refresh_interval {
                self.refresh(&entry, false);
            }
        }
        let mut rates = self
            .counters
            .shard_rates
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let percent = self.config.rate_limit_percent;
        for ((stream, shard), q) in &mut self.shards {
            let name = format!("{stream}/{shard}");
            if let Some(rate) = rates.get_mut(&name) {
                q.limiter.advance(now);
                let current = q.limiter.rate_percent(percent);
                if current >= f64::from(percent) {
                    rates.remove(&name);
                    kpl_metrics::shard_rate(stream, shard, f64::from(percent));
                } else {
                    *rate = current;
                    kpl_metrics::shard_rate(stream, shard, current);
                }
            }
        }
    }

    /// Starts a map refresh for the stream unless one is running; with `all`, closed shards are
    /// listed too (to learn the range of a shard that is no longer open).
    pub(super) fn refresh(&mut self, entry: &Arc<StreamEntry>, all: bool) {
        if self.shutting_down && self.parked.is_empty() {
            return;
        }
        if !begin_refresh(entry) {
            return;
        }
        let api = self.api.clone();
        let entry = entry.clone();
        self.refreshes.spawn(async move {
            // The shared jittered back-off: up to 1 s, then 2, 4, 8 s.
            let config = kinesis_retry::BackoffConfig::new(REFRESH_BACKOFF.0, REFRESH_BACKOFF.1)
                .expect("valid constants");
            let mut backoff = kinesis_retry::Backoff::new(config);
            for _ in 0..REFRESH_ATTEMPTS {
                let listed = CatchUnwind::new(list(&*api, &entry, all)).await;
                let listed = listed.unwrap_or_else(|panic| {
                    Err(CallError::Other(format!("ListShards panicked: {panic}")))
                });
                match listed {
                    Ok(map) => {
                        entry.set_map(map);
                        return Refreshed { entry, ok: true };
                    }
                    Err(e) => {
                        tracing::warn!(stream = %entry.id, code = e.code(), message = %e.message(), "shard map refresh failed");
                        let delay = backoff.next_delay(&mut rand::rng());
                        tokio::time::sleep(delay).await;
                    }
                }
            }
            Refreshed { entry, ok: false }
        });
    }
}

pub(super) async fn list(
    api: &dyn KinesisApi,
    entry: &StreamEntry,
    all: bool,
) -> Result<ShardMap, CallError> {
    let open = api.list_shards(&entry.id, true).await?;
    let previous = entry.map();
    let mut map = ShardMap::new(open, Some(&previous));
    if all {
        map.learn(&api.list_shards(&entry.id, false).await?);
    }
    Ok(map)
}
