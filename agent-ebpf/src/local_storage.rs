//! Local storage maps: one value per kernel object, found through the object itself (no hash,
//! no key) and freed by the kernel with it.
//! - [`TaskStorage`] (`BPF_MAP_TYPE_TASK_STORAGE`, Linux 5.11+): per thread, through its
//!   `task_struct`;
//! - [`SkStorage`] (`BPF_MAP_TYPE_SK_STORAGE`, Linux 5.2+; from `tp_btf` programs 5.11+): per
//!   socket, through its `struct sock`.
//!
//! aya-ebpf 0.2 has no wrapper for either, so these are the BTF map definitions (`.maps`
//! section) the loader reads: every field is a typed null pointer whose type carries one
//! attribute (map type, key, value, size, flags), the layout libbpf and aya both parse. Each
//! object uses only one of them.
#![allow(dead_code)]
use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_LOCAL_STORAGE_GET_F_CREATE, bpf_map_type},
    helpers::generated::{bpf_get_current_task_btf, bpf_sk_storage_get, bpf_task_storage_get},
};

/// A local storage map of kernel map type `TYPE`; [`TaskStorage`] and [`SkStorage`] add the
/// lookups through their kernel object.
#[repr(C)]
pub struct LocalStorage<T, const TYPE: usize> {
    r#type: *const [i32; TYPE],
    key: *const i32,
    value: *const T,
    // Local storage has no size of its own (0) and must not be preallocated.
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
}

// SAFETY: the fields are never dereferenced; the kernel owns the map and synchronises it.
unsafe impl<T, const TYPE: usize> Sync for LocalStorage<T, TYPE> {}

impl<T, const TYPE: usize> LocalStorage<T, TYPE> {
    pub const fn new() -> Self {
        Self {
            r#type: core::ptr::null(),
            key: core::ptr::null(),
            value: core::ptr::null(),
            max_entries: core::ptr::null(),
            map_flags: core::ptr::null(),
        }
    }

    fn as_map(&self) -> *mut core::ffi::c_void {
        core::ptr::from_ref(self).cast_mut().cast()
    }
}

pub type TaskStorage<T> = LocalStorage<T, { bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE as usize }>;
pub type SkStorage<T> = LocalStorage<T, { bpf_map_type::BPF_MAP_TYPE_SK_STORAGE as usize }>;

impl<T> TaskStorage<T> {
    #[inline(always)]
    fn get(&self, task: *mut aya_ebpf::bindings::task_struct, flags: u64) -> Option<*mut T> {
        // SAFETY: `task` is a BTF task pointer the verifier checks; `self` is the map.
        let p = unsafe { bpf_task_storage_get(self.as_map(), task, core::ptr::null_mut(), flags) };
        (!p.is_null()).then_some(p.cast())
    }

    /// The value of `task` (a BTF `task_struct` pointer, e.g. the current task's), created
    /// zeroed when it has none (`None` only when the kernel cannot allocate it or the storage
    /// is busy on this CPU).
    #[inline(always)]
    pub fn of_or_zeroed(&self, task: *mut aya_ebpf::bindings::task_struct) -> Option<*mut T> {
        self.get(task, BPF_LOCAL_STORAGE_GET_F_CREATE.into())
    }

    /// The current thread's value if it has one.
    #[inline(always)]
    pub fn current(&self) -> Option<*mut T> {
        // SAFETY: as above.
        let task = unsafe { bpf_get_current_task_btf() };
        self.get(task, 0)
    }

    /// The value of `task` (a BTF `task_struct` pointer from a `tp_btf` argument) if it has one.
    #[inline(always)]
    pub fn of(&self, task: *mut aya_ebpf::bindings::task_struct) -> Option<*mut T> {
        self.get(task, 0)
    }
}

impl<T> SkStorage<T> {
    #[inline(always)]
    fn get(&self, sk: *mut core::ffi::c_void, flags: u64) -> Option<*mut T> {
        // SAFETY: `sk` is a BTF `struct sock` pointer the verifier checks; `self` is the map.
        let p = unsafe { bpf_sk_storage_get(self.as_map(), sk, core::ptr::null_mut(), flags) };
        (!p.is_null()).then_some(p.cast())
    }

    /// The value of socket `sk` (a `tp_btf` argument) if it has one.
    #[inline(always)]
    pub fn of(&self, sk: *mut core::ffi::c_void) -> Option<*mut T> {
        self.get(sk, 0)
    }

    /// The value of socket `sk`, created zeroed when it has none (`None` only when the kernel
    /// cannot allocate it).
    #[inline(always)]
    pub fn of_or_zeroed(&self, sk: *mut core::ffi::c_void) -> Option<*mut T> {
        self.get(sk, BPF_LOCAL_STORAGE_GET_F_CREATE.into())
    }
}
