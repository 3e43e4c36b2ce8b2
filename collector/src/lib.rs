//! meshaudit collector (being built).
