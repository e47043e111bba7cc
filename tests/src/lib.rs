//! Shared helpers for servicekit's integration, process and UI tests.
