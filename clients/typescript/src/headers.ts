// The interceptor that puts the bearer token and the protocol version on every call.
import type { Interceptor } from "@connectrpc/connect";
import { PROTOCOL_VERSION_HEADER } from "./protocol.js";

export function headersInterceptor(token: string | undefined, protocolVersion: string): Interceptor {
  return (next) => (req) => {
    req.header.set(PROTOCOL_VERSION_HEADER, protocolVersion);
    if (token !== undefined && token !== "") req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}
