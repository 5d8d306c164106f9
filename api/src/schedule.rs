//! Scheduled operations at the API.
