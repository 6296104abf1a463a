//! rootseal
