# guestd build, test and lint entry points. `make` builds the static musl binary.
TARGET   := x86_64-unknown-linux-musl
BIN      := target/$(TARGET)/release/guestd
INITRD   := build/initramfs.cpio.gz
CARGO    ?= cargo
MAX_SIZE := 614400

.PHONY: all build profile-build musl-target test unit budget smoke smoke-libvirt demo bench bench-quick bench-deps vm-deps initramfs lint fmt clippy size clean

all: build

musl-target:
	@rustup target list --installed 2>/dev/null | grep -qx '$(TARGET)' || rustup target add $(TARGET)
	@rustup component list --installed 2>/dev/null | grep -q '^rust-src' || rustup component add rust-src

# The release binary rebuilds std for size: without std's "backtrace" feature (its DWARF
# symbolizer, ~220 KB that a panic=abort daemon never uses) and with "optimize_for_size".
# Stable cargo has no other way to drop it, so this one build step sets RUSTC_BOOTSTRAP=1
# to allow -Zbuild-std; std's source comes from the toolchain's own rust-src component, so
# the std built is the toolchain's. Panics still reach guestd's logging hook, then abort.
BUILD_STD := -Zbuild-std=std,panic_abort -Zbuild-std-features=optimize_for_size
# No unwind tables (.eh_frame, ~78 KB): with panic=abort nothing unwinds, and the backtrace
# support that could read them is left out above. Relative relocations packed as DT_RELR
# (musl's static-pie start-up applies them): the position-independent binary keeps ASLR,
# and its relocation table shrinks from ~28 KB to ~0.4 KB.
RELEASE_RUSTFLAGS := -C force-unwind-tables=no -C link-arg=-Wl,-z,pack-relative-relocs

build: musl-target
	RUSTFLAGS="$(RELEASE_RUSTFLAGS)" RUSTC_BOOTSTRAP=1 $(CARGO) build --release --locked --target $(TARGET) $(BUILD_STD)
	@$(MAKE) --no-print-directory size

# The release build with symbols (profile size-report: the same code, not stripped), for
# callgrind: `make budget` and `make bench` count its instructions.
PROFILE_BIN := target/$(TARGET)/size-report/guestd
profile-build: musl-target
	RUSTFLAGS="$(RELEASE_RUSTFLAGS)" RUSTC_BOOTSTRAP=1 $(CARGO) build --profile size-report --locked --target $(TARGET) $(BUILD_STD) --bin guestd

# Size budget and static linking are checked on every build.
size:
	@size=$$(stat -c %s $(BIN)); \
	 printf 'guestd: %s (%s bytes, %s KiB)\n' "$(BIN)" "$$size" "$$((size / 1024))"; \
	 if command -v file >/dev/null; then file -b $(BIN) | grep -Eq 'static(-pie)? linked|statically linked' \
	   || { echo "error: $(BIN) is not statically linked: $$(file -b $(BIN))"; exit 1; }; fi; \
	 [ "$$size" -le $(MAX_SIZE) ] || { echo "error: $(BIN) is $$size bytes, over the $(MAX_SIZE)-byte budget"; exit 1; }

# Every test: unit and integration tests, the instruction budgets, then the QEMU and libvirt
# smoke tests.
test: unit budget smoke smoke-libvirt

unit:
	$(CARGO) test --locked

# Instruction counts (callgrind) of a heartbeat tick and of guest-ping against
# tests/budgets.txt: fails more than 20% over a budget; skips, saying so, without valgrind.
budget: profile-build
	GUESTD_BIN=$(PROFILE_BIN) $(CARGO) test --locked --test budget -- --ignored --nocapture

vm-deps:
	@initramfs/deps.sh

initramfs: build vm-deps
	@mkdir -p build
	initramfs/build.sh $(BIN) $(INITRD)

# Boots the test image under QEMU (TCG) and checks the agent from the host side.
smoke: initramfs
	$(CARGO) test --locked --test smoke -- --ignored --nocapture

# Boots the test image as a libvirt domain and checks guestd through virsh (the QGA side:
# domifaddr, guestinfo, domfsinfo, domtime, set-user-password, domfsfreeze, shutdown). Uses a
# running libvirtd, or starts virtlogd and libvirtd and stops them again.
smoke-libvirt: initramfs
	$(CARGO) test --locked --test smoke_libvirt -- --ignored --nocapture

# The main job: boot a VM running guestd and print what the host side receives.
demo: initramfs
	$(CARGO) build --locked --bin guestctl
	initramfs/demo.sh

# guestd against qemu-ga (Debian's qemu-guest-agent), like with like in one run: both serve
# QGA on UNIX sockets to one client (src/bin/guestd-bench.rs), rounds interleaved; callgrind
# instruction counts; NICs in a network namespace made for the run; start-up, RSS, sizes,
# wake-ups; a QEMU guest with both agents. Writes docs/benchmarks.md. About 10 minutes.
# bench-quick: fewer rounds and sizes, no QEMU guest, table to build/benchmarks-quick.md;
# under a minute.
BENCH_ENV = GUESTD_BIN=$(BIN) GUESTD_PROFILE_BIN=$(PROFILE_BIN)
bench-deps:
	@command -v qemu-ga >/dev/null || [ -x /usr/sbin/qemu-ga ] || { echo "bench needs qemu-ga: sudo apt-get install qemu-guest-agent"; exit 1; }

bench: bench-deps initramfs profile-build
	QEMU_GA=1 initramfs/build.sh $(BIN) build/bench.cpio.gz
	$(BENCH_ENV) BENCH_INITRD=build/bench.cpio.gz $(CARGO) test --locked --test bench -- --ignored --nocapture

bench-quick: bench-deps build profile-build
	$(BENCH_ENV) BENCH_QUICK=1 $(CARGO) test --locked --test bench -- --ignored --nocapture

lint: fmt clippy

fmt:
	$(CARGO) fmt --check

# Clippy for the host target and for the musl target the release binary is built for.
clippy: musl-target
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) clippy --locked --all-targets --target $(TARGET) -- -D warnings

clean:
	$(CARGO) clean
	rm -rf build
