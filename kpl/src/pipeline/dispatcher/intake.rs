//! What comes in from the handles: commands taken in batches, each record stamped and routed
//! (shard predicted from its stream's map) to the aggregator.

use kinesis_format::HashKey;

use crate::pipeline::pending::Incoming;

use super::*;

impl Dispatcher {
    /// Handles a batch of commands in order; runs of records for one stream share one look-up
    /// of its shard map.
    pub(super) fn on_commands(&mut self, inbox: &mut Vec<Command>) {
        let mut run: Option<(Arc<StreamEntry>, Arc<ShardMap>, u64)> = None;
        // One clock read for the batch: they all arrived by now.
        let now = Instant::now();
        let mut hashes = [HashKey::MIN; WINDOW];
        let mut commands = inbox.drain(..);
        loop {
            let window = commands.as_slice();
            let n = window.len().min(WINDOW);
            if n == 0 {
                break;
            }
            hash_keys(&window[..n], &mut hashes[..n]);
            for (hash, command) in hashes[..n].iter().zip(commands.by_ref()) {
                match command {
                    Command::Put(incoming) => self.on_put(incoming, *hash, now, &mut run),
                    Command::Flush => self.flushing = true,
                    Command::FlushAndWait(done) => {
                        self.flushing = true;
                        self.epochs.wait(done);
                    }
                    Command::Shutdown => {
                        self.shutting_down = true;
                        self.flushing = true;
                    }
                }
            }
        }
        self.end_run(run);
    }

    /// Stamps a new record and routes it; `run` is the stream of the records just before it.
    fn on_put(
        &mut self,
        incoming: Incoming,
        hash_key: HashKey,
        now: Instant,
        run: &mut Option<(Arc<StreamEntry>, Arc<ShardMap>, u64)>,
    ) {
        let p = incoming.into_pending(hash_key, now, self.epochs.accept());
        let same = run.as_ref().is_some_and(|(entry, _, _)| {
            // Pointer first: the names' bytes share a cache line with a reference count the
            // caller's thread may be changing.
            Arc::ptr_eq(&entry.id, &p.record.stream) || entry.id == p.record.stream
        });
        if !same {
            self.end_run(run.take());
            *run = self.entry(&p.record.stream).map(|entry| {
                let map = entry.map();
                (entry, map, 0)
            });
        }
        match run {
            Some((entry, map, received)) => {
                *received += 1;
                self.route(p, entry, map);
            }
            // Every stream was loaded by `put` before its records were sent.
            None => self.give_up(p, PutErrorKind::Stopped),
        }
    }

    fn end_run(&self, run: Option<(Arc<StreamEntry>, Arc<ShardMap>, u64)>) {
        if let Some((entry, _, received)) = run {
            kpl_metrics::received(&entry.id, received);
        }
    }

    /// The entry of a stream `put` has loaded.
    pub(super) fn entry(&mut self, stream: &StreamId) -> Option<Arc<StreamEntry>> {
        if let Some(entry) = self.entries.get(stream) {
            return Some(entry.clone());
        }
        let entry = self.streams.get(stream)?;
        self.entries.insert(stream.clone(), entry.clone());
        Some(entry)
    }

    /// Routes a record coming back for another attempt.
    pub(super) fn reroute(&mut self, p: Pending) {
        match self.entry(&p.record.stream) {
            Some(entry) => {
                let map = entry.map();
                self.route(p, &entry, &map);
            }
            None => self.give_up(p, PutErrorKind::Stopped),
        }
    }

    /// Predicts the record's shard and hands it to the aggregator.
    fn route(&mut self, p: Pending, entry: &Arc<StreamEntry>, map: &ShardMap) {
        let shard = map.predict(p.hash_key);
        if shard.is_none() {
            self.refresh(entry, false);
        }
        let mut closed = Vec::new();
        self.aggregator.add(p, shard, &mut closed);
        // Most records close nothing.
        if !closed.is_empty() {
            self.enqueue(closed);
        }
    }
}

/// Commands handled together: their partition keys are hashed side by side.
const WINDOW: usize = 64;

/// The hash keys of a window of commands' records (`HashKey::MIN` for other commands): partition
/// keys are hashed side by side; explicit hash keys (checked by `put`) are read.
fn hash_keys(window: &[Command], out: &mut [HashKey]) {
    let mut at = Vec::with_capacity(window.len());
    let mut keys = Vec::with_capacity(window.len());
    for (i, command) in window.iter().enumerate() {
        out[i] = HashKey::MIN;
        if let Command::Put(incoming) = command {
            match &incoming.record.explicit_hash_key {
                None => {
                    at.push(i);
                    keys.push(incoming.record.partition_key.as_str());
                }
                Some(explicit) => {
                    out[i] = HashKey::parse_explicit(explicit).unwrap_or(HashKey::MIN);
                }
            }
        }
    }
    for (i, hash) in at.into_iter().zip(HashKey::from_partition_keys(&keys)) {
        out[i] = hash;
    }
}
