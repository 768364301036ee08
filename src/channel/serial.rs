// SPDX-License-Identifier: Apache-2.0
//! Serial lines (`serial:DEVICE`): opened non-blocking in raw mode. A serial line has no
//! "host left" state, so it counts as attached from the moment it is open.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use super::{Error, err, open_device};
use crate::sys;

/// Opens `path` and puts the line in raw mode.
pub fn open(path: &Path) -> Result<File, Error> {
    let f = open_device(path)?;
    sys::set_raw(f.as_fd()).map_err(err("setting raw mode on", path))?;
    log::info!("opened serial line {}", path.display());
    Ok(f)
}
