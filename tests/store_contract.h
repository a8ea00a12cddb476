/*
 * Checks of store.h's contract that every backend must pass, written once
 * and run by each backend's test (memory in the unit tests, memcached,
 * redis and redis-cluster against real servers). cmocka assertions: call
 * them from a cmocka test.
 */
#ifndef LT_TEST_STORE_CONTRACT_H
#define LT_TEST_STORE_CONTRACT_H

struct store;

/* store_add_batch: a large batch over every node is added, sent again it is
 * all STORE_EXISTS and the first values stay; of two items with one key the
 * first wins; a bad key or a value too long is STORE_ERROR and the rest of
 * the batch still goes. prefix keeps its keys apart from the caller's. */
void store_contract_add_batch(struct store *s, const char *prefix);

/* store_add_batch on a pool (replicas=1) whose node down_node (URL order)
 * is down: its keys are STORE_UNAVAILABLE, the others' are added. Returns
 * how many keys were on the node that is down. */
int store_contract_add_batch_node_down(struct store *s, const char *prefix, unsigned down_node);

/* store_get_each_many over a few hundred keys: every copy of a key set
 * (copies: the backend's replicas), NOTFOUND for a key not set, ERROR for a
 * value longer than STORE_GET_MANY_VALUE_MAX and for a key that is not
 * one; no node missed. Deletes its keys (prefix keeps them apart). */
void store_contract_get_each_many(struct store *s, const char *prefix, int copies);

#endif
