//! The built-in proxy as a Router.
