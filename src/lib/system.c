/* capsule_system_*: the stores of $CAPSULE_HOME taken together (images, saves, the vm
 * store), for `capsule system df` and `capsule system prune`. In capsule_images: pruning the
 * image store is that archive's code. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "image.h"
#include "internal.h"
#include "json.h"
#include "pool.h"
#include "save.h"
#include "util.h"
#include "vm_store.h"

int capsule_system_df_json(char **json_out, capsule_error *err)
{
	uint64_t images = 0, image_bytes = 0, saves = 0, save_bytes = 0;
	int r = image_store_usage(&images, &image_bytes, err);
	if (r == 0)
		r = save_store_usage(&saves, &save_bytes, err);
	if (r < 0)
		return r;
	struct json_writer j;
	json_init(&j, true);
	json_object_begin(&j);
	json_key(&j, "images");
	json_object_begin(&j);
	json_kv_uint(&j, "count", images);
	json_kv_uint(&j, "bytes", image_bytes);
	json_object_end(&j);
	json_key(&j, "saves");
	json_object_begin(&j);
	json_kv_uint(&j, "count", saves);
	json_kv_uint(&j, "bytes", save_bytes);
	json_object_end(&j);
	if ((r = vm_store_usage_json(&j, err)) < 0) {
		json_free(&j);
		return r;
	}
	json_object_end(&j);
	int e = 0;
	char *text = json_steal(&j, &e);
	if (!text)
		return cap_err(err, e ? -e : ENOMEM, "formatting the store's usage");
	*json_out = text;
	return 0;
}

int capsule_system_prune(uint64_t *freed_bytes, capsule_error *err)
{
	uint64_t image_bytes = 0;
	/* Pools whose keeper is gone first: what they left holds nothing else. */
	int r = pool_prune(err);
	if (r < 0)
		return r;
	/* Images next: the layers they free are what makes a vm root disk unused. */
	r = image_store_prune(&image_bytes, err);
	if (r < 0)
		return r;
	struct vm_store_tally vm = { 0 };
	if ((r = vm_store_collect(VM_STORE_ALL, &vm, err)) < 0)
		return r;
	if (freed_bytes)
		*freed_bytes = image_bytes + vm.bytes;
	return 0;
}
