/* vgpu's private C ABI between its shims (libcuda.so.1 owns the session; libcublas and
 * others use it through these functions). Not for applications. */
#ifndef VGPU_H
#define VGPU_H
#include <stddef.h>
#include <stdint.h>

/* Returned when the server is lost or unreachable. */
#define VGPU_LOST 0xFFFFFFFFu

/* Send one call of the protocol table (`op`, postcard-encoded `args`, raw `bulk_in`) in the
 * calling thread's current context. One-way calls return at once; others wait and put the
 * reply value in `reply` (length in *reply_len) and the reply's bulk bytes in `bulk_out`.
 * Returns 0, the API status code the server answered, or VGPU_LOST. */
uint32_t vgpu_roundtrip(uint32_t op, const uint8_t *args, size_t args_len,
                        const uint8_t *bulk_in, size_t bulk_in_len,
                        uint8_t *bulk_out, size_t bulk_out_cap,
                        uint8_t *reply, size_t reply_cap, size_t *reply_len);
#endif
