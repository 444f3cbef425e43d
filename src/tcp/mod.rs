//! TCP proxy (todo)
