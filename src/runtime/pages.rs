//! The executable's two large buffers, the arena and the packed weights, on transparent huge
//! pages where the system allows it.
//!
//! A forward pass walks every byte of both once, several megabytes of each, in long sequential
//! streams. On 4 KiB pages that is a TLB miss every 4 KiB and a stop of the hardware prefetchers at
//! every page boundary; a 2 MiB page removes both. Linux hands out huge pages to a mapping only
//! when asked (`/sys/kernel/mm/transparent_hugepage/enabled` is often `madvise`), so a buffer of
//! at least [`HUGE`] bytes is its own anonymous mapping, aligned to 2 MiB and advised with
//! `MADV_HUGEPAGE` before anything touches it (the pages are then faulted in as huge pages).
//! A smaller buffer is its own mapping too, for the alignment: the kernels' packed panels and
//! buffers sit at multiples of 64 bytes from the start, which a heap block aligns only to 16
//! (MobileNet v1 ran 1.6% slower with its weights 16 bytes off a 64-byte boundary; MobileNetV2's
//! 1.7 MB arena and EffNet's buffers gained 2-4% from starting on a page). Other systems, and any
//! failure of the mapping, fall back to an ordinary `Vec` (as does every buffer when
//! [`HEAP_BUFFERS`] is set); the advice is only a hint, so a system without huge pages runs the
//! same code on small pages.

use std::ops::{Deref, DerefMut};

/// Size of a huge page, and the smallest buffer put on huge pages.
pub const HUGE: usize = 2 << 20;

/// An environment variable that, set to anything, keeps every buffer on the heap, sized exactly:
/// a mapping rounds its size up to whole pages, and a memory checker (`scripts/valgrind.sh` sets
/// it) sees an access past the end of a buffer only when nothing follows it.
pub const HEAP_BUFFERS: &str = "NETC_HEAP_BUFFERS";

/// Size of a small page: every mapping starts on one.
const PAGE: usize = 4096;

/// A zero-initialized, fixed-length buffer of `f32`.
pub struct Pages {
    store: Store,
}

enum Store {
    Heap(Vec<f32>),
    /// `len` floats at `data`, inside the mapping of `bytes` bytes at `base`.
    Mapped {
        base: *mut libc::c_void,
        bytes: usize,
        data: *mut f32,
        len: usize,
    },
}

// SAFETY: the mapping is owned by the buffer alone, like a `Vec`'s allocation.
unsafe impl Send for Pages {}
// SAFETY: shared access only reads, as for a `&[f32]`.
unsafe impl Sync for Pages {}

impl Pages {
    /// `len` zeros; `None` when the memory cannot be allocated. A mapping (and a large heap
    /// block) comes as fresh zero pages, which cost nothing until they are touched.
    pub fn zeroed(len: usize) -> Option<Pages> {
        let store = match map(len) {
            Some(store) => store,
            None => Store::Heap(heap_zeroed(len)?),
        };
        Some(Pages { store })
    }

    /// `values`, moved to a mapping of their own; kept where they are when there is none (see
    /// [`Pages::mapped`]). The copy runs from the end a huge page at a time and gives each
    /// copied stretch of the vector back to the allocator, so the values are not held twice
    /// (MobileNet v1's 17 MB of packed weights raised the peak resident memory by 11 MB when
    /// copied at once).
    pub fn from_vec(mut values: Vec<f32>) -> Pages {
        let Some(mut store) = map(values.len()) else {
            return Pages {
                store: Store::Heap(values),
            };
        };
        let to = store_slice(&mut store);
        while !values.is_empty() {
            let start = values.len().saturating_sub(HUGE / 4);
            to[start..values.len()].copy_from_slice(&values[start..]);
            values.truncate(start);
            values.shrink_to_fit();
        }
        Pages { store }
    }

    /// Whether the buffer is its own mapping (see the module documentation).
    pub fn mapped(&self) -> bool {
        matches!(self.store, Store::Mapped { .. })
    }

    /// Bytes of the buffer that the system backs with huge pages (`AnonHugePages` of its
    /// mapping's entry in `/proc/self/smaps`, at most the buffer's size): 0 for a buffer on the
    /// heap, `None` where the system does not tell.
    pub fn huge_page_bytes(&self) -> Option<u64> {
        // The advice splits the mapping: the entry to read is the one holding the data.
        let Store::Mapped { data, .. } = self.store else {
            return Some(0);
        };
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            if let Some(range) = mapping_range(line) {
                inside = range.contains(&(data as usize));
            } else if let Some(huge) = kib_field(line, "AnonHugePages:").filter(|_| inside) {
                return Some(huge.min(self.len() as u64 * 4));
            }
        }
        None
    }
}

/// The address range `start-end` (hexadecimal) that opens a mapping's entry in
/// `/proc/self/smaps`, if `line` is one.
fn mapping_range(line: &str) -> Option<std::ops::Range<usize>> {
    let (start, end) = line.split_whitespace().next()?.split_once('-')?;
    Some(usize::from_str_radix(start, 16).ok()?..usize::from_str_radix(end, 16).ok()?)
}

/// The value in bytes of a `/proc` line `field   N kB`, if `line` is that field's.
pub fn kib_field(line: &str, field: &str) -> Option<u64> {
    let kib: u64 = line
        .strip_prefix(field)?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// `len` zeros from the global allocator, or `None` when it has no memory for them.
fn heap_zeroed(len: usize) -> Option<Vec<f32>> {
    if len == 0 {
        return Some(Vec::new());
    }
    let layout = std::alloc::Layout::array::<f32>(len).ok()?;
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<f32>();
    if ptr.is_null() {
        return None;
    }
    // SAFETY: `ptr` was allocated by the global allocator with the layout of `len` f32s, which
    // are initialized (all-zero bits are 0.0).
    Some(unsafe { Vec::from_raw_parts(ptr, len, len) })
}

/// An anonymous mapping of at least `len` floats, page-aligned, and when it takes [`HUGE`] bytes
/// or more, starting on a 2 MiB boundary and advised for huge pages; `None` for an empty buffer,
/// on other systems or when the mapping fails.
#[cfg(target_os = "linux")]
fn map(len: usize) -> Option<Store> {
    let size = len.checked_mul(4)?;
    if size == 0 || std::env::var_os(HEAP_BUFFERS).is_some() {
        return None;
    }
    // A huge buffer starts on a 2 MiB boundary inside a mapping one huge page longer (a whole
    // number of huge pages, which the system may itself align).
    let (huge, align, slack) = if size >= HUGE {
        (true, HUGE, HUGE)
    } else {
        (false, PAGE, 0)
    };
    let data_bytes = size.checked_next_multiple_of(align)?;
    let bytes = data_bytes.checked_add(slack)?;
    // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return None;
    }
    let start = (base as usize).next_multiple_of(align);
    if huge {
        // SAFETY: `start .. start + data_bytes` lies inside the mapping. The advice may fail
        // (no transparent huge pages in this kernel); the pages are then small, which is still
        // correct.
        unsafe { libc::madvise(start as *mut libc::c_void, data_bytes, libc::MADV_HUGEPAGE) };
    }
    Some(Store::Mapped {
        base,
        bytes,
        data: start as *mut f32,
        len,
    })
}

#[cfg(not(target_os = "linux"))]
fn map(_len: usize) -> Option<Store> {
    None
}

impl Drop for Pages {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Store::Mapped { base, bytes, .. } = self.store {
            // SAFETY: the mapping was made by `map` with this size and is not used afterwards.
            unsafe { libc::munmap(base, bytes) };
        }
    }
}

/// The floats of a store, mutably.
fn store_slice(store: &mut Store) -> &mut [f32] {
    match store {
        Store::Heap(v) => v,
        // SAFETY: `len` floats at `data` lie inside the live mapping, zero-initialized by the
        // system, and the `&mut` borrow of the store makes this the only reference.
        Store::Mapped { data, len, .. } => unsafe { std::slice::from_raw_parts_mut(*data, *len) },
    }
}

impl Deref for Pages {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match &self.store {
            Store::Heap(v) => v,
            // SAFETY: as in `store_slice`; shared access only reads.
            Store::Mapped { data, len, .. } => unsafe { std::slice::from_raw_parts(*data, *len) },
        }
    }
}

impl DerefMut for Pages {
    fn deref_mut(&mut self) -> &mut [f32] {
        store_slice(&mut self.store)
    }
}

#[cfg(test)]
mod tests {
    use super::{Pages, HUGE, PAGE};

    #[test]
    fn buffers_are_mapped_on_pages_and_large_ones_on_huge_page_boundaries() {
        let linux = cfg!(target_os = "linux");
        let empty = Pages::zeroed(0).unwrap();
        assert!(empty.is_empty() && !empty.mapped());
        let small = Pages::zeroed(1000).unwrap();
        assert_eq!(small.mapped(), linux);
        if linux {
            assert_eq!(small.as_ptr() as usize % PAGE, 0);
        }
        assert_eq!(small.len(), 1000);
        assert!(small.iter().all(|&v| v == 0.0));
        let len = HUGE / 4 * 3 + 5;
        let mut large = Pages::zeroed(len).unwrap();
        assert_eq!(large.len(), len);
        assert_eq!(large.mapped(), linux);
        if linux {
            assert_eq!(large.as_ptr() as usize % HUGE, 0);
        }
        assert!(large.iter().all(|&v| v == 0.0));
        large[len - 1] = 7.0;
        assert_eq!(large[len - 1], 7.0);
        // Whether the system gives huge pages is its own choice; the count is bounded by the
        // buffer either way.
        assert_eq!(small.huge_page_bytes(), Some(0));
        if linux {
            assert!(large.huge_page_bytes().unwrap() <= len as u64 * 4);
        }
    }

    #[test]
    fn from_vec_keeps_every_value() {
        let values: Vec<f32> = (0..HUGE / 4 + 3).map(|i| i as f32).collect();
        let pages = Pages::from_vec(values.clone());
        assert_eq!(pages.mapped(), cfg!(target_os = "linux"));
        assert_eq!(&pages[..], &values[..]);
        assert_eq!(&Pages::from_vec(vec![1.0, 2.0])[..], &[1.0, 2.0]);
    }
}
