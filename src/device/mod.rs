//! The device: the merged flash image and serial flashing (`flash`), and the badge's own main
//! loop on the host (`sim`). Imports `export`, `config` and `util`; nothing imports it but the
//! demo and the command line.

pub mod flash;
pub mod sim;
