// The protocol version a client declares, and the header that carries it.

/** The protocol version this package speaks; sent on every call unless overridden. */
export const PROTOCOL_VERSION = "v1";

/** Request header in which the client declares its protocol version. */
export const PROTOCOL_VERSION_HEADER = "remotemedia-protocol-version";

/** Trailer in which a server lists its versions when it refuses the declared one. */
export const SUPPORTED_VERSIONS_TRAILER = "remotemedia-supported-versions";
