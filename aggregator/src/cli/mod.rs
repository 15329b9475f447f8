//! The subcommands besides `run` and `check`: certificates, revocations, tokens and the audit log
//! from the command line (`admin`), a status tree from the REST API (`status`), and a local
//! quickstart (`quickstart`). Part of the binary, not the library.

pub(crate) mod admin;
pub(crate) mod quickstart;
pub(crate) mod status;
