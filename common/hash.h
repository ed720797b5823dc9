/* hash.h: content hashes (OpenSSL's SHA-256, which uses the CPU's SHA extensions).
 * Each returns 0, or -ENOMEM if OpenSSL could not allocate its context. */
#ifndef WISP_HASH_H
#define WISP_HASH_H

#include <stddef.h>
#include <stdint.h>

#define HASH_SHA256_LEN     32
#define HASH_SHA256_HEX_LEN 64

int hash_sha256(const void *data, size_t len, uint8_t out[HASH_SHA256_LEN]);
/* out receives 64 lower-case hex digits and a NUL. */
int hash_sha256_hex(const void *data, size_t len, char out[HASH_SHA256_HEX_LEN + 1]);
/* out receives 32 lower-case hex digits and a NUL. */
int hash_md5_hex(const void *data, size_t len, char out[33]);
void hash_to_hex(const uint8_t *bytes, size_t len, char *out);

#endif
