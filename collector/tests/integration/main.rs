//! Integration tests of the collector, in one binary (one link step):
//! the store story on SQLite and PostgreSQL, every ingest refusal, the seed
//! 000 smoke test as a real shell script, durability under kill -9, and
//! tamper detection.

mod durability;
mod process;
mod refusals;
mod smoke;
mod story;
mod support;
mod tamper;
