// SPDX-License-Identifier: Apache-2.0
//! Setting the clocks: the system time (clock_settime(2) on `CLOCK_REALTIME`) and the
//! hardware clock through an RTC device (rtc(4) `RTC_RD_TIME`, `RTC_SET_TIME`), for QGA's
//! guest-set-time when no `hwclock` program is installed.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use super::cvt;

/// A broken-down time as the RTC driver takes it (`struct rtc_time`, like `struct tm`):
/// `mon` counts from 0, `year` from 1900. guestd keeps the RTC in UTC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtcTime {
    pub sec: i32,
    pub min: i32,
    pub hour: i32,
    pub mday: i32,
    pub mon: i32,
    pub year: i32,
}

/// `struct rtc_time` from linux/rtc.h: nine ints.
#[repr(C)]
#[derive(Default)]
struct RawRtcTime {
    tm_sec: libc::c_int,
    tm_min: libc::c_int,
    tm_hour: libc::c_int,
    tm_mday: libc::c_int,
    tm_mon: libc::c_int,
    tm_year: libc::c_int,
    tm_wday: libc::c_int,
    tm_yday: libc::c_int,
    tm_isdst: libc::c_int,
}

// _IOR('p', 0x09, struct rtc_time) and _IOW('p', 0x0a, struct rtc_time): the asm-generic
// ioctl encoding (x86, arm, aarch64, riscv, s390), 36-byte argument.
#[allow(clippy::cast_possible_wrap, clippy::cast_possible_truncation)]
const RTC_RD_TIME: libc::Ioctl = 0x8024_7009_u32 as libc::Ioctl;
#[allow(clippy::cast_possible_wrap, clippy::cast_possible_truncation)]
const RTC_SET_TIME: libc::Ioctl = 0x4024_700a_u32 as libc::Ioctl;

/// Reads the hardware clock of the open RTC device `rtc` (`RTC_RD_TIME`).
pub fn rtc_read(rtc: &File) -> io::Result<RtcTime> {
    let mut raw = RawRtcTime::default();
    // SAFETY: RTC_RD_TIME writes one `struct rtc_time`, which `raw` is (repr(C), nine ints),
    // writable and alive for the call; the fd is owned by `rtc`; the result is checked.
    cvt(unsafe { libc::ioctl(rtc.as_raw_fd(), RTC_RD_TIME, &mut raw as *mut RawRtcTime) })?;
    Ok(RtcTime {
        sec: raw.tm_sec,
        min: raw.tm_min,
        hour: raw.tm_hour,
        mday: raw.tm_mday,
        mon: raw.tm_mon,
        year: raw.tm_year,
    })
}

/// Sets the hardware clock of the open RTC device `rtc` (`RTC_SET_TIME`).
pub fn rtc_set(rtc: &File, t: &RtcTime) -> io::Result<()> {
    let raw = RawRtcTime {
        tm_sec: t.sec,
        tm_min: t.min,
        tm_hour: t.hour,
        tm_mday: t.mday,
        tm_mon: t.mon,
        tm_year: t.year,
        ..RawRtcTime::default()
    };
    // SAFETY: RTC_SET_TIME reads one `struct rtc_time`, which `raw` is, alive for the call;
    // the fd is owned by `rtc`; the result is checked.
    cvt(unsafe { libc::ioctl(rtc.as_raw_fd(), RTC_SET_TIME, &raw as *const RawRtcTime) })?;
    Ok(())
}

/// Sets the system time to `secs` seconds and `nsec` nanoseconds after the epoch
/// (clock_settime(2) on `CLOCK_REALTIME`; needs CAP_SYS_TIME).
pub fn set_realtime(secs: i64, nsec: u32) -> io::Result<()> {
    // time_t is 64 bits on every target guestd is built for (x86_64, aarch64).
    let ts = libc::timespec {
        tv_sec: secs,
        tv_nsec: libc::c_long::from(nsec.min(999_999_999)),
    };
    // SAFETY: `ts` is a valid timespec that outlives the call; the result is checked.
    cvt(unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) })?;
    Ok(())
}
