//! End-to-end harness (being built).
