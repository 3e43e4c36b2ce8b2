//! Free lists of small blocks in front of the system allocator: the wasm
//! build's global allocator.
//!
//! A metadata request allocates and frees ~58 small blocks (header strings,
//! the event's fields, hostcall results); wasi-libc's dlmalloc spends ~225
//! wasm instructions on each pair, ~10 % of the filter's instructions per
//! request in V8 (`scripts/bench/wasm_v8.sh --count`, docs/BENCHMARKS.md).
//! Here a freed block of up to 2 KiB goes onto the free list of its size
//! class (powers of two from 16 bytes) and the next allocation of that class
//! pops it. Each list keeps at most [`KEEP`] blocks, so at most ~255 KiB
//! waits here per VM; the rest goes back to the system allocator, as does
//! every larger or more aligned block.
//!
//! The state is not synchronised: a proxy-wasm VM runs on one thread and
//! wasm32-wasip1 has no threads, so the global instance is only declared
//! there (`lib.rs`). The unit tests use their own instances on one thread.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::ptr::null_mut;

/// Size classes: 16, 32, …, 2048 bytes.
const CLASSES: usize = 8;
const SMALLEST: usize = 16;
const LARGEST: usize = SMALLEST << (CLASSES - 1);
/// Blocks kept per class.
pub const KEEP: usize = 64;

struct Lists {
    /// The first free block of each class; a free block holds the pointer
    /// to the next one in its first word.
    heads: [*mut u8; CLASSES],
    lens: [usize; CLASSES],
}

pub struct SmallBlockCache<A> {
    inner: A,
    lists: UnsafeCell<Lists>,
}

// SAFETY: only sound on one thread; the global instance exists only on
// wasm32 without the `atomics` feature, where there is exactly one.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
unsafe impl<A: Sync> Sync for SmallBlockCache<A> {}

impl<A> SmallBlockCache<A> {
    pub const fn new(inner: A) -> Self {
        SmallBlockCache {
            inner,
            lists: UnsafeCell::new(Lists {
                heads: [null_mut(); CLASSES],
                lens: [0; CLASSES],
            }),
        }
    }

    /// Blocks waiting in each class's list (tests, diagnostics).
    pub fn kept(&self) -> [usize; CLASSES] {
        // SAFETY: one thread (see the type); no reference into the lists is
        // held across calls.
        unsafe { (*self.lists.get()).lens }
    }
}

/// The class of a layout this cache serves, `None` for the others.
fn class(layout: Layout) -> Option<usize> {
    if layout.align() > SMALLEST || layout.size() > LARGEST {
        return None;
    }
    let size = layout.size().max(SMALLEST);
    // ceil(log2(size)) - log2(SMALLEST)
    Some((usize::BITS - (size - 1).leading_zeros() - SMALLEST.trailing_zeros()) as usize)
}

/// The layout of every block of class `c` (< CLASSES): what the inner
/// allocator sees.
fn class_layout(c: usize) -> Layout {
    debug_assert!(c < CLASSES);
    // SAFETY: the alignment is a power of two and the size (at most
    // LARGEST) is a multiple of it, far from overflowing.
    unsafe { Layout::from_size_align_unchecked(SMALLEST << c, SMALLEST) }
}

unsafe impl<A: GlobalAlloc> GlobalAlloc for SmallBlockCache<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(c) = class(layout) else {
            // SAFETY: forwarded as given.
            return unsafe { self.inner.alloc(layout) };
        };
        // SAFETY: one thread (see the type). A block on a list was allocated
        // by `inner` with `class_layout(c)`, is at least 16 bytes and
        // 16-aligned, and its first word holds the next free block.
        unsafe {
            let lists = &mut *self.lists.get();
            let head = lists.heads[c];
            if head.is_null() {
                return self.inner.alloc(class_layout(c));
            }
            lists.heads[c] = *(head as *mut *mut u8);
            lists.lens[c] -= 1;
            head
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(c) = class(layout) else {
            // SAFETY: forwarded as given.
            return unsafe { self.inner.dealloc(ptr, layout) };
        };
        // SAFETY: one thread; `ptr` came from `alloc` with a layout of class
        // `c`, so it is a block of `class_layout(c)` from `inner`, now ours.
        unsafe {
            let lists = &mut *self.lists.get();
            if lists.lens[c] >= KEEP {
                return self.inner.dealloc(ptr, class_layout(c));
            }
            *(ptr as *mut *mut u8) = lists.heads[c];
            lists.heads[c] = ptr;
            lists.lens[c] += 1;
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = match Layout::from_size_align(new_size, layout.align()) {
            Ok(l) => l,
            Err(_) => return null_mut(),
        };
        match (class(layout), class(new_layout)) {
            // The block already has room: a class is its size.
            (Some(a), Some(b)) if a == b => ptr,
            // SAFETY: neither is ours: forwarded as given.
            (None, None) => unsafe { self.inner.realloc(ptr, layout, new_size) },
            _ => {
                // SAFETY: a fresh block of `new_layout`, the common prefix
                // copied, the old block freed by the rules above.
                unsafe {
                    let new = self.alloc(new_layout);
                    if !new.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    new
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;
    use std::cell::Cell;

    /// The system allocator, counting what reaches it.
    #[derive(Default)]
    struct Counting {
        allocs: Cell<usize>,
        frees: Cell<usize>,
    }

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            self.allocs.set(self.allocs.get() + 1);
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            self.frees.set(self.frees.get() + 1);
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn sizes_map_to_their_classes() {
        for (size, c) in [
            (0, Some(0)),
            (1, Some(0)),
            (16, Some(0)),
            (17, Some(1)),
            (32, Some(1)),
            (33, Some(2)),
            (1024, Some(6)),
            (1025, Some(7)),
            (2048, Some(7)),
            (2049, None),
        ] {
            assert_eq!(class(layout(size, 1)), c, "size {size}");
        }
        assert_eq!(class(layout(64, 16)), Some(2));
        assert_eq!(class(layout(64, 32)), None, "more aligned than a class");
    }

    #[test]
    fn a_freed_block_serves_the_next_allocation_of_its_class() {
        let cache = SmallBlockCache::new(Counting::default());
        unsafe {
            let a = cache.alloc(layout(20, 8));
            a.write_bytes(0xab, 20);
            cache.dealloc(a, layout(20, 8));
            assert_eq!(cache.kept()[1], 1);
            // another size of the same class (17..=32) gets the same block
            let b = cache.alloc(layout(32, 1));
            assert_eq!(a, b);
            assert_eq!(cache.kept()[1], 0);
            // the block has its class's room
            b.write_bytes(0xcd, 32);
            // another class does not
            let c = cache.alloc(layout(8, 1));
            assert_ne!(c, b);
            cache.dealloc(b, layout(32, 1));
            cache.dealloc(c, layout(8, 1));
        }
        assert_eq!(cache.inner.allocs.get(), 2);
        assert_eq!(cache.inner.frees.get(), 0);
        assert_eq!(cache.kept(), [1, 1, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn each_list_keeps_a_bounded_number_of_blocks() {
        let cache = SmallBlockCache::new(Counting::default());
        let l = layout(100, 8);
        unsafe {
            let blocks: Vec<*mut u8> = (0..KEEP + 10).map(|_| cache.alloc(l)).collect();
            for &b in &blocks {
                cache.dealloc(b, l);
            }
        }
        assert_eq!(cache.kept()[3], KEEP);
        assert_eq!(cache.inner.allocs.get(), KEEP + 10);
        assert_eq!(cache.inner.frees.get(), 10, "the blocks past KEEP go back");
        // reused in last-in, first-out order, then fresh ones again
        unsafe {
            let again: Vec<*mut u8> = (0..KEEP + 1).map(|_| cache.alloc(l)).collect();
            assert_eq!(cache.kept()[3], 0);
            assert_eq!(cache.inner.allocs.get(), KEEP + 11);
            for b in again {
                cache.dealloc(b, l);
            }
        }
    }

    #[test]
    fn large_and_overaligned_blocks_go_straight_through() {
        let cache = SmallBlockCache::new(Counting::default());
        unsafe {
            for l in [layout(4096, 8), layout(64, 64)] {
                let p = cache.alloc(l);
                assert_eq!(p as usize % l.align(), 0);
                cache.dealloc(p, l);
            }
        }
        assert_eq!(cache.inner.allocs.get(), 2);
        assert_eq!(cache.inner.frees.get(), 2);
        assert_eq!(cache.kept(), [0; CLASSES]);
    }

    #[test]
    fn realloc_keeps_the_contents_across_classes_and_sizes() {
        let cache = SmallBlockCache::new(Counting::default());
        unsafe {
            let mut l = layout(10, 1);
            let mut p = cache.alloc(l);
            for i in 0..10 {
                *p.add(i) = i as u8;
            }
            // within the class: the same block
            let q = cache.realloc(p, l, 16);
            assert_eq!(p, q);
            l = layout(16, 1);
            // through every class, past the largest, and back down
            for size in [40, 300, 2048, 5000, 9000, 1500, 12] {
                p = cache.realloc(p, l, size);
                assert!(!p.is_null());
                for i in 0..10 {
                    assert_eq!(*p.add(i), i as u8, "byte {i} after growing to {size}");
                }
                l = layout(size, 1);
            }
            cache.dealloc(p, l);
        }
        // everything that reached the system allocator was returned or kept
        let kept: usize = cache.kept().iter().sum();
        assert_eq!(cache.inner.allocs.get(), cache.inner.frees.get() + kept);
    }
}
