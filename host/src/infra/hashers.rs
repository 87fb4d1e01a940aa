//! The hashers of the host's maps.

/// Hashing for maps keyed by agent id, looked up on every message: ids are host-assigned, so a
/// fast hash is safe here.
pub type IdHasher = foldhash::fast::RandomState;

/// Hashing for maps keyed by names that guests choose: seeded and of higher quality, so that no
/// agent can craft colliding names.
pub type NameHasher = foldhash::quality::RandomState;
