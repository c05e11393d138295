//! Which instance last served each prompt block: the prefix index behind cache-aware
//! routing. Bounded (least recently used blocks are forgotten first); each entry costs about
//! 48 bytes (an 8-byte key, a 4-byte instance index, the LRU list's links and the hash
//! table's slot), so the default 200,000 entries take about 10 MiB.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;

use super::prefix::PromptChain;

pub struct PrefixIndex {
    map: Mutex<LruCache<u64, u32>>,
}

/// The instance holding the longest cached prefix of a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub instance: usize,
    /// Blocks matched (a session hint counts as the whole prompt).
    pub blocks: usize,
}

impl PrefixIndex {
    pub fn new(entries: usize) -> PrefixIndex {
        let cap = NonZeroUsize::new(entries.max(1)).unwrap_or(NonZeroUsize::MIN);
        PrefixIndex {
            map: Mutex::new(LruCache::new(cap)),
        }
    }

    /// The deepest block some instance served, past the leading system prompt (a shared
    /// system prompt alone would pin every conversation to one instance).
    pub fn owner(&self, chain: &PromptChain) -> Option<Owner> {
        let mut map = self.map.lock().ok()?;
        if let Some(i) = chain.session.and_then(|s| map.get(&s).copied()) {
            return Some(Owner {
                instance: i as usize,
                blocks: chain.blocks.len(),
            });
        }
        let deep = chain.blocks.iter().enumerate().skip(chain.system_blocks);
        for (i, h) in deep.rev() {
            if let Some(instance) = map.get(h) {
                return Some(Owner {
                    instance: *instance as usize,
                    blocks: i + 1,
                });
            }
        }
        None
    }

    /// `instance` now holds the whole chain (it evaluates the prompt into one of its slots).
    pub fn record(&self, chain: &PromptChain, instance: usize) {
        let Ok(mut map) = self.map.lock() else {
            return;
        };
        let i = instance as u32;
        for h in chain.blocks.iter().skip(chain.system_blocks) {
            map.put(*h, i);
        }
        if let Some(s) = chain.session {
            map.put(s, i);
        }
    }

    /// Forgets a block owner that no longer holds it (an instance that went away).
    pub fn forget_instance(&self, instance: usize) {
        if let Ok(mut map) = self.map.lock() {
            let gone: Vec<u64> = map
                .iter()
                .filter(|(_, i)| **i as usize == instance)
                .map(|(k, _)| *k)
                .collect();
            for k in gone {
                map.pop(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(blocks: &[u64], system: usize) -> PromptChain {
        PromptChain {
            blocks: blocks.to_vec(),
            system_blocks: system,
            session: None,
        }
    }

    #[test]
    fn the_deepest_block_wins_and_system_prompts_do_not_count() {
        let index = PrefixIndex::new(100);
        index.record(&chain(&[1, 2], 1), 0);
        index.record(&chain(&[1, 2, 3, 4], 1), 1);
        assert_eq!(
            index.owner(&chain(&[1, 2, 3, 4, 5, 6], 1)),
            Some(Owner {
                instance: 1,
                blocks: 4
            })
        );
        assert_eq!(
            index.owner(&chain(&[1, 9], 1)),
            None,
            "only the system prompt is shared"
        );
        index.forget_instance(1);
        assert_eq!(
            index.owner(&chain(&[1, 2, 3], 1)),
            None,
            "block 2 had moved to 1"
        );
    }

    #[test]
    fn it_is_bounded() {
        let index = PrefixIndex::new(3);
        index.record(&chain(&[1, 2, 3, 4, 5], 0), 0);
        assert_eq!(index.owner(&chain(&[1], 0)), None, "forgotten first");
        assert!(index.owner(&chain(&[5], 0)).is_some());
    }
}
