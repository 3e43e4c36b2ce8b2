//! meshaudit benchmark tools (being built).
