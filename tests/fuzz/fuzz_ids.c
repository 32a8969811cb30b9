/*
 * libFuzzer harness: the ID validators of src/ids.c (x-correlation-id,
 * x-request-id, traceparent) against reference checks written from SPEC §5
 * and W3C Trace Context, on an exact-size copy of the input so ASan sees
 * any over-read; and the IDs ferry generates pass its own validators.
 */
#include "fuzz_common.h"
#include "ids.h"

static bool
ref_id(const unsigned char *s, size_t len)
{
	if (len < 1 || len > 128)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!isalnum(s[i]) && (s[i] == '\0' || !strchr("._:-", s[i])))
			return false;
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size ? size : 1);
	char gen[TRACEPARENT_LEN];

	if (s == NULL)
		abort();
	memcpy(s, data, size);
	PROP(ids_valid(s, size) == ref_id((const unsigned char *)s, size));
	PROP(ids_traceparent_valid(s, size) == ref_traceparent((const unsigned char *)s, size));
	/* every prefix too: a validator must not read past LEN */
	if (size > 0) {
		PROP(ids_valid(s, size - 1) == ref_id((const unsigned char *)s, size - 1));
		PROP(ids_traceparent_valid(s, size - 1) ==
		    ref_traceparent((const unsigned char *)s, size - 1));
	}
	free(s);

	ids_uuid4(gen);
	PROP(ids_valid(gen, UUID_LEN) && gen[14] == '4' && strchr("89ab", gen[19]));
	ids_traceparent(gen);
	PROP(ids_traceparent_valid(gen, TRACEPARENT_LEN));
	return 0;
}
