//! The partition table parser; a table it accepts must survive a round trip through `build`.
#![no_main]

use badge_firmware::partition::{build, Partition, PartitionTable};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(table) = PartitionTable::parse(data) else {
        return;
    };
    let parts: Vec<Partition> = table.iter().collect();
    let _ = table.find("model");
    let _ = table.boot_app();
    for p in &parts {
        assert!(p.end() <= 1 << 32);
    }
    // Labels that are not valid names (non-UTF-8, embedded NUL) are refused by `build`; every
    // other accepted table is rebuilt and parses to the same partitions.
    if let Ok(bin) = build(&parts) {
        let again = PartitionTable::parse(&bin).expect("a built table parses");
        assert!(again.iter().eq(parts.iter().copied()));
    }
});
