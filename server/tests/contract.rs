//! The contract suite (`suite/contract.rs`) on the sled store.

mod support;

#[path = "suite/contract.rs"]
mod suite;
