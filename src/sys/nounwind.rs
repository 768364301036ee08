// SPDX-License-Identifier: Apache-2.0
//! The unwinder entry points std's (never used) panic personality refers to, defined here so
//! the static release build does not link LLVM's libunwind.
//!
//! guestd is built with `panic = "abort"`: nothing ever unwinds, and std's backtrace support
//! is left out of the release build. Yet std still contains its personality routine, which
//! names a few `_Unwind_*` functions; the linker then pulls LLVM's libunwind out of the musl
//! target's archive, and with it `printf`, `dl_iterate_phdr` and friends: about 55 KB of a
//! 600 KB budget that can never run. An archive member is only linked to resolve an
//! undefined symbol, so defining those symbols here keeps it out. Each one aborts: reaching
//! any of them would mean a panic tried to unwind, which `panic = "abort"` rules out.
//!
//! Only for the static musl build with `panic = "abort"` (debug builds and tests link the
//! system unwinder as usual).

use std::ffi::c_void;

/// Never returns: an unwinder entry was reached, which `panic = "abort"` rules out.
fn unreachable_unwind() -> ! {
    std::process::abort()
}

macro_rules! no_unwind {
    ($($name:ident),* $(,)?) => {
        $(
            // SAFETY: these names belong to the unwinder ABI, which nothing else in the
            // binary defines (libunwind is kept out by these very definitions); the function
            // takes no pointer it would use and never returns, so any caller is sound.
            #[unsafe(no_mangle)]
            pub extern "C" fn $name(_: *mut c_void, _: *mut c_void, _: *mut c_void) -> usize {
                unreachable_unwind()
            }
        )*
    };
}

no_unwind!(
    _Unwind_GetDataRelBase,
    _Unwind_GetTextRelBase,
    _Unwind_GetLanguageSpecificData,
    _Unwind_GetIPInfo,
    _Unwind_GetIP,
    _Unwind_GetRegionStart,
    _Unwind_GetCFA,
    _Unwind_SetGR,
    _Unwind_SetIP,
    _Unwind_RaiseException,
    _Unwind_Resume,
    _Unwind_DeleteException,
    _Unwind_Backtrace,
    _Unwind_FindEnclosingFunction,
);
