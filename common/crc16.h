/*
 * Redis Cluster key slots: CRC16-CCITT (XMODEM: polynomial 0x1021, initial
 * value 0, no reflection, no final xor) of the key, modulo 16384, with the
 * cluster's hash tag rule: when the key holds a '{' followed later by a '}'
 * with at least one byte between them, only the bytes between the first '{'
 * and the first '}' after it are hashed ("{user1000}.following" and
 * "{user1000}.followers" share a slot; "foo{}{bar}" hashes all of itself).
 */
#ifndef LT_CRC16_H
#define LT_CRC16_H

#include <stddef.h>
#include <stdint.h>

#define CRC16_SLOTS 16384u

uint16_t crc16_xmodem(const void *buf, size_t len);

/* The cluster slot of a key, 0..CRC16_SLOTS-1. */
uint16_t crc16_key_slot(const char *key, size_t len);

#endif
