//! onsale's end-to-end tests, in `tests/`: they run the workspace's built binaries
//! (`deploy/test` builds every one first) against private Redis, Postgres and broker
//! instances, and parse the deploy manifests. Nothing here is a library; the crate
//! exists so that the load generator stays a load generator and no service crate
//! carries tests of the whole farm.
