//! Media helpers: added with the plugin tests.
