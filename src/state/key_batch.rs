//! User keys read on one thread and settled on another: a batch keeps its keys' text in
//! one buffer, so handing over a thousand keys costs two allocations, not thousands.

use std::ops::Range;

use super::{MirrorKey, PushedKey, Result, State, UserKey};

/// Keys in one batch (about 200 KB of text and fields).
const KEYS_PER_BATCH: usize = 1024;

/// A run of [`UserKey`]s in id order, owned.
#[derive(Debug, Default)]
pub struct KeyBatch {
    text: String,
    keys: Vec<PackedKey>,
}

#[derive(Debug)]
struct PackedKey {
    id: Range<u32>,
    mirror: Option<PackedMirror>,
    pushed: Option<PackedPushed>,
}

#[derive(Debug)]
struct PackedMirror {
    soft_deleted: bool,
    props_hash: Option<i64>,
    manager: Option<Range<u32>>,
}

#[derive(Debug)]
struct PackedPushed {
    active: bool,
    source_hash: Option<i64>,
    manager: Option<Range<u32>>,
    user_name: Range<u32>,
}

impl KeyBatch {
    fn push(&mut self, key: &UserKey<'_>) {
        let mirror = key.mirror.map(|m| PackedMirror {
            soft_deleted: m.soft_deleted,
            props_hash: m.props_hash,
            manager: m.manager.map(|s| self.keep(s)),
        });
        let pushed = key.pushed.map(|p| PackedPushed {
            active: p.active,
            source_hash: p.source_hash,
            manager: p.manager.map(|s| self.keep(s)),
            user_name: self.keep(p.user_name),
        });
        let id = self.keep(key.id);
        self.keys.push(PackedKey { id, mirror, pushed });
    }

    fn keep(&mut self, s: &str) -> Range<u32> {
        let start = self.text.len();
        self.text.push_str(s);
        // a batch holds a few hundred KB of text: far below u32
        start as u32..self.text.len() as u32
    }

    fn at(&self, span: &Range<u32>) -> &str {
        &self.text[span.start as usize..span.end as usize]
    }

    /// The batch's keys, borrowed from it, in id order.
    pub fn keys(&self) -> impl Iterator<Item = UserKey<'_>> {
        self.keys.iter().map(|k| UserKey {
            id: self.at(&k.id),
            mirror: k.mirror.as_ref().map(|m| MirrorKey {
                soft_deleted: m.soft_deleted,
                props_hash: m.props_hash,
                manager: m.manager.as_ref().map(|s| self.at(s)),
            }),
            pushed: k.pushed.as_ref().map(|p| PushedKey {
                active: p.active,
                source_hash: p.source_hash,
                manager: p.manager.as_ref().map(|s| self.at(s)),
                user_name: self.at(&p.user_name),
            }),
        })
    }
}

impl State {
    /// [`State::for_each_user_key`] in owned batches, for a planner on another thread;
    /// returns how many keys there were.
    pub fn user_key_batches(&self, each: impl FnMut(KeyBatch)) -> Result<usize> {
        let mut batcher = Batcher {
            batch: KeyBatch::default(),
            each,
        };
        let total = self.for_each_user_key(|key| batcher.add(key))?;
        batcher.finish();
        Ok(total)
    }
}

/// Fills batches and hands each on when full.
struct Batcher<F: FnMut(KeyBatch)> {
    batch: KeyBatch,
    each: F,
}

impl<F: FnMut(KeyBatch)> Batcher<F> {
    fn add(&mut self, key: &UserKey<'_>) {
        self.batch.push(key);
        if self.batch.keys.len() == KEYS_PER_BATCH {
            (self.each)(std::mem::take(&mut self.batch));
        }
    }

    fn finish(mut self) {
        if !self.batch.keys.is_empty() {
            (self.each)(self.batch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(key: &UserKey<'_>) -> String {
        format!("{key:?}")
    }

    #[test]
    fn batches_give_back_the_keys_they_were_given() {
        let keys: Vec<UserKey<'static>> = (0..2_500)
            .map(|i| UserKey {
                id: ["a1", "b22", "c333"][i % 3],
                mirror: (i % 4 != 0).then_some(MirrorKey {
                    soft_deleted: i % 5 == 0,
                    props_hash: (i % 7 != 0).then_some(i as i64 * -31),
                    manager: (i % 2 == 0).then_some("boss"),
                }),
                pushed: (i % 3 != 0).then_some(PushedKey {
                    active: i % 2 == 1,
                    source_hash: (i % 11 != 0).then_some(i as i64),
                    manager: (i % 6 == 0).then_some("other-boss"),
                    user_name: ["x@y", "", "z@w"][i % 3],
                }),
            })
            .collect();
        let mut batches = Vec::new();
        let mut batcher = Batcher {
            batch: KeyBatch::default(),
            each: |b| batches.push(b),
        };
        keys.iter().for_each(|k| batcher.add(k));
        batcher.finish();
        assert_eq!(batches.len(), 3);
        let back: Vec<String> = batches
            .iter()
            .flat_map(|b| b.keys())
            .map(|k| owned(&k))
            .collect();
        let given: Vec<String> = keys.iter().map(owned).collect();
        assert_eq!(back, given);
    }
}
