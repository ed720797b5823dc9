/* hash.c: SHA-256 and MD5 through OpenSSL's EVP interface. */
#include "hash.h"

#include <errno.h>
#include <openssl/evp.h>

void hash_to_hex(const uint8_t *bytes, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * len] = '\0';
}

static int hash_digest(const EVP_MD *md, const void *data, size_t len, uint8_t *out)
{
    unsigned int out_len;

    /* EVP_Digest fails only when OpenSSL cannot allocate its context. */
    return EVP_Digest(data, len, out, &out_len, md, NULL) ? 0 : -ENOMEM;
}

int hash_sha256(const void *data, size_t len, uint8_t out[HASH_SHA256_LEN])
{
    return hash_digest(EVP_sha256(), data, len, out);
}

int hash_sha256_hex(const void *data, size_t len, char out[HASH_SHA256_HEX_LEN + 1])
{
    uint8_t md[HASH_SHA256_LEN];
    int r = hash_sha256(data, len, md);

    if (r == 0)
        hash_to_hex(md, sizeof md, out);
    return r;
}

int hash_md5_hex(const void *data, size_t len, char out[33])
{
    uint8_t md[16];
    int r = hash_digest(EVP_md5(), data, len, md);

    if (r == 0)
        hash_to_hex(md, sizeof md, out);
    return r;
}
