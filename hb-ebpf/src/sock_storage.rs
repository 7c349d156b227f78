//! Socket-local storage maps (`BPF_MAP_TYPE_SK_STORAGE`) pinned by name: their BTF
//! definition and the one look-up each takes. A socket's record lives and dies with the
//! socket, so no flood of other sockets can push it out (attack review 48).
//!
//! The definition is what libbpf and aya-obj read from the `.maps` section: each field a
//! pointer whose pointee's type says the value (an array's length for numbers). Socket
//! storage has no size of its own (`max_entries` 0, no preallocation); `pinning` 1 is
//! `LIBBPF_PIN_BY_NAME`, under the agent's map pin directory like every `#[map]`.
//! `aya_ebpf::btf_maps::SkStorage` is the same without `pinning`, and its helpers take
//! only a sock_addr context; a pin is what lets a restarted agent's programs find the
//! storage its predecessor's gave the sockets that are still open.
//!
//! Owns no record and no policy: the modules that declare a map decide what it holds.

/// Declares a pinned socket-storage map: `static NAME: Def<Value> = "PIN";` defines the
/// BTF type `Def`, the map `NAME` pinned as `PIN`, `Def::storage`, the look-up, and
/// `Def::read`/`Def::write` of a whole record.
macro_rules! sock_storage_map {
    ($(#[$doc:meta])* static $name:ident: $def:ident<$value:ty> = $pin:literal;) => {
        /// The BTF definition of a socket-storage map (see `sock_storage`).
        #[repr(C)]
        pub(crate) struct $def {
            r#type: *const [i32; aya_ebpf::bindings::bpf_map_type::BPF_MAP_TYPE_SK_STORAGE
                as usize],
            key: *const i32,
            value: *const $value,
            max_entries: *const [i32; 0],
            map_flags: *const [i32; aya_ebpf::bindings::BPF_F_NO_PREALLOC as usize],
            pinning: *const [i32; 1],
        }

        // SAFETY: the fields are placeholders the loader reads from BTF; nothing
        // dereferences them.
        unsafe impl Sync for $def {}

        $(#[$doc])*
        #[unsafe(link_section = ".maps")]
        #[unsafe(export_name = $pin)]
        static $name: $def = $def {
            r#type: core::ptr::null(),
            key: core::ptr::null(),
            value: core::ptr::null(),
            max_entries: core::ptr::null(),
            map_flags: core::ptr::null(),
            pinning: core::ptr::null(),
        };

        impl $def {
            /// The storage of `sk` (a non-null socket pointer of the program's context),
            /// created holding `*init` when `init` is given and the socket has none.
            /// Null when it has none (and `init` is `None`), when `sk` is not a full
            /// socket (a request or time-wait socket), or when the kernel could not
            /// allocate it (the socket's option memory is charged).
            #[inline(always)]
            fn storage(
                &'static self,
                sk: *mut aya_ebpf::bindings::bpf_sock,
                init: Option<&mut $value>,
            ) -> *mut $value {
                let (value, flags) = match init {
                    Some(v) => (
                        core::ptr::from_mut(v),
                        u64::from(aya_ebpf::bindings::BPF_SK_STORAGE_GET_F_CREATE),
                    ),
                    None => (core::ptr::null_mut(), 0),
                };
                // SAFETY: the map pointer is this program's map (relocated by the
                // loader); `sk` is a socket pointer of the program's context, checked
                // non-null by the caller (the verifier insists); `value` is null or a
                // whole value on the stack.
                unsafe {
                    aya_ebpf::helpers::generated::bpf_sk_storage_get(
                        core::ptr::from_ref(self).cast_mut().cast(),
                        sk.cast(),
                        value.cast(),
                        flags,
                    )
                }
                .cast()
            }

            /// A copy of the record of `sk` (a socket pointer of the program's context,
            /// which may be null: no socket, no record), if it has one.
            #[allow(dead_code, reason = "not every map is read whole")]
            #[inline(always)]
            fn read(&'static self, sk: *mut aya_ebpf::bindings::bpf_sock) -> Option<$value> {
                if sk.is_null() {
                    return None;
                }
                let p = self.storage(sk, None);
                // SAFETY: non-null storage of this map holds its value type; copied out at once.
                (!p.is_null()).then(|| unsafe { *p })
            }

            /// Stores `value` as the record of `sk` (a socket pointer of the program's
            /// context; null stores nothing), replacing any other. False when nothing was
            /// stored: no socket, or storage the kernel could not allocate.
            #[allow(dead_code, reason = "not every map is written whole")]
            #[inline(always)]
            fn write(&'static self, sk: *mut aya_ebpf::bindings::bpf_sock, value: $value) -> bool {
                if sk.is_null() {
                    return false;
                }
                let mut init = value;
                let p = self.storage(sk, Some(&mut init));
                if p.is_null() {
                    return false;
                }
                // SAFETY: non-null storage of this map holds its value type, the socket's own; its
                // writers are this socket's hooks, which run under the socket's lock.
                unsafe { *p = value };
                true
            }
        }
    };
}

pub(crate) use sock_storage_map;
