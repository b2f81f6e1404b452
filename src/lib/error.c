#include <string.h>

#include "capsule.h"

void capsule_error_clear(capsule_error *err)
{
	if (err)
		memset(err, 0, sizeof(*err));
}
