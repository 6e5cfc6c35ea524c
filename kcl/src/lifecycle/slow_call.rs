//! A processor call that does not return stalls its shard, while the lease is still renewed: from
//! outside, the shard looks held and quiet. So each call is watched, and one still running after
//! `slow_processor_call_warning` is named in a warning, and again each time its running time
//! doubles (60 s, 120 s, 240 s...), until it returns. The call itself is never cancelled.

use std::future::Future;
use std::time::Duration;

/// Which call on which shard, for the warnings.
#[derive(Clone, Copy, Debug)]
pub(super) struct Watched<'a> {
    pub(super) stream: &'a str,
    pub(super) shard: &'a str,
    pub(super) call: &'static str,
}

/// Awaits `call`, warning while it runs past `warn_after` (`None`: no warnings).
pub(super) async fn watch<T>(
    what: Watched<'_>,
    warn_after: Option<Duration>,
    call: impl Future<Output = T>,
) -> T {
    let Some(mut next) = warn_after else {
        return call.await;
    };
    tokio::pin!(call);
    let started = tokio::time::Instant::now();
    let mut warned = false;
    loop {
        tokio::select! {
            biased;
            out = &mut call => {
                if warned {
                    tracing::info!(stream = what.stream, shard = what.shard, call = what.call, took = ?started.elapsed(), "the slow processor call returned");
                }
                return out;
            }
            () = tokio::time::sleep_until(started + next) => {
                crate::kcl_metrics::slow_call(what.stream, what.shard, what.call);
                tracing::warn!(
                    stream = what.stream,
                    shard = what.shard,
                    call = what.call,
                    running_for = ?next,
                    "the processor's {} has not returned: this shard makes no progress until it does (its lease is still renewed); look for a blocked or very slow call in the processor",
                    what.call
                );
                warned = true;
                next = next.saturating_mul(2);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHAT: Watched<'static> = Watched {
        stream: "s",
        shard: "shardId-0",
        call: "process_records",
    };

    #[tokio::test(start_paused = true)]
    async fn a_call_is_awaited_to_its_end_past_every_warning() {
        let started = tokio::time::Instant::now();
        let out = watch(WHAT, Some(Duration::from_secs(60)), async {
            tokio::time::sleep(Duration::from_secs(300)).await;
            7
        })
        .await;
        assert_eq!(out, 7);
        assert_eq!(started.elapsed(), Duration::from_secs(300), "not cancelled");
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_warning_time_the_call_is_awaited_as_it_is() {
        let out = watch(WHAT, None, async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            "done"
        })
        .await;
        assert_eq!(out, "done");
    }
}
