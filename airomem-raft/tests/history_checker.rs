//! The linearizability checker the cluster tests rely on, checked against histories with a
//! known verdict: a checker that passes everything would make those tests pass vacuously.

mod support;
