//! Thread control of an emulated aarch64 process through qemu-user's GDB
//! stub (`checkpoint::gdb`): stop at entry, registers, memory reads and
//! writes, run, interrupt, and the exit status, against a real
//! `qemu-aarch64 -g PORT`.

use popcorn_checkpoint::gdb::aarch64::{CoreRegs, CORE_BYTES, FPCR, V0};
use popcorn_checkpoint::gdb::{GdbClient, GdbError, StopReply};
use popcorn_tests::programs::nm_symbols;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn build_target(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("programs/aarch64/gdb_target.c");
    let out = dir.join("gdb_target");
    let st = Command::new("aarch64-linux-gnu-gcc")
        .args(["-O0", "-g", "-static", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("aarch64-linux-gnu-gcc (apt-get install gcc-aarch64-linux-gnu)");
    assert!(st.success());
    out
}

/// Address of a symbol of an ELF file (GNU nm reads any ELF).
fn symbol(bin: &Path, name: &str) -> u64 {
    nm_symbols(bin)
        .into_iter()
        .find_map(|(n, addr)| (n == name).then_some(addr))
        .unwrap_or_else(|| panic!("no symbol {name} in {}", bin.display()))
}

/// The entry point from the ELF header.
fn entry(bin: &Path) -> u64 {
    let b = std::fs::read(bin).unwrap();
    u64::from_le_bytes(b[24..32].try_into().unwrap())
}

struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn controls_an_emulated_aarch64_process() {
    let dir = std::env::temp_dir().join(format!("popcorn-gdb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = build_target(&dir);
    let port = free_port();
    let qemu = Qemu(
        Command::new("qemu-aarch64")
            .args(["-cpu", "cortex-a72", "-g", &port.to_string()])
            .arg(&bin)
            .stdout(Stdio::piped())
            .spawn()
            .expect("qemu-aarch64 (apt-get install qemu-user)"),
    );
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut gdb = GdbClient::connect(addr, Duration::from_secs(10)).expect("connect to the stub");
    gdb.set_qemu_pid(qemu.0.id() as i32);

    // Stopped at the ELF entry point, before the first instruction.
    assert_eq!(gdb.stop_reason().unwrap(), StopReply::Signal(5));
    let g = gdb.read_registers().unwrap();
    assert!(g.len() >= CORE_BYTES, "g packet of {} bytes", g.len());
    let regs = CoreRegs::from_g(&g).unwrap();
    assert_eq!(regs.pc, entry(&bin));
    assert!(
        regs.sp != 0 && regs.sp.is_multiple_of(16),
        "sp {:#x}",
        regs.sp
    );
    // Writing the registers back as read is accepted and changes nothing.
    gdb.write_registers(&regs.to_g()).unwrap();
    assert_eq!(CoreRegs::from_g(&gdb.read_registers().unwrap()), Some(regs));
    // Vector registers are outside `g`, one by one.
    assert_eq!(gdb.read_register(V0).unwrap().len(), 16);
    assert_eq!(gdb.read_register(FPCR).unwrap().len(), 4);
    // Guest memory: the initialised global, and a write read back.
    let message = symbol(&bin, "message");
    assert_eq!(&gdb.read_memory(message, 6).unwrap(), b"hello\0");
    let big: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let scratch = regs.sp - 8192;
    gdb.write_memory(scratch, &big).unwrap();
    assert_eq!(gdb.read_memory(scratch, big.len()).unwrap(), big);
    // An unmapped address is refused with a clear error.
    match gdb.read_memory(0x10, 8) {
        Err(GdbError::Refused { .. }) => {}
        other => panic!("reading address 0x10: {other:?}"),
    }

    // Run, interrupt while it spins, look at it, change it, let it finish.
    gdb.resume().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    gdb.interrupt().unwrap();
    let stop = gdb.wait_stop(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(stop, StopReply::Signal(2), "stopped by the interrupt");
    let regs = CoreRegs::from_g(&gdb.read_registers().unwrap()).unwrap();
    let main = symbol(&bin, "main");
    assert!(
        (main..main + 0x100).contains(&regs.pc),
        "interrupted in main ({main:#x}): pc {:#x}",
        regs.pc
    );
    let counter = u64::from_le_bytes(
        gdb.read_memory(symbol(&bin, "counter"), 8).unwrap()[..8]
            .try_into()
            .unwrap(),
    );
    assert!(counter > 0, "it ran");
    gdb.write_memory(message, b"migrated\0").unwrap();
    gdb.write_memory(symbol(&bin, "go"), &1u32.to_le_bytes())
        .unwrap();
    gdb.resume().unwrap();
    let stop = gdb.wait_stop(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(stop, StopReply::Exited(3));
    let mut qemu = qemu;
    let mut stdout = String::new();
    use std::io::Read;
    qemu.0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert_eq!(stdout, "migrated 1\n");
    let _ = std::fs::remove_dir_all(&dir);
}
