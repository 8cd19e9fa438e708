//! Criterion micro-benchmarks for Jackdaw's hot path; the code is in
//! `benches/`. This library is empty: it only gives the package a target.
