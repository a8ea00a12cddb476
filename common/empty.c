/* Keeps a part library valid while it has no sources of its own. */
typedef int lt_empty_translation_unit;
