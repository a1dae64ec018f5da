//! buyonce integration support: `fakecloud`, the local AWS + Azure commitment-purchase emulator
//! that every test of the project runs against, and the harness the integration suites (in
//! `tests/tests/`), the benchmark and the demo build their isolated worlds with.

pub mod fakecloud;
pub mod harness;
pub mod nodes;
