/* Mounts (proto.h): a client's hot MOUNT and UNMOUNT and the OK that answers them, and the
 * shim's VM_MOUNT, VM_UNMOUNT and VM_MOUNTED to a vm's agent. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto_internal.h"

/* ---- hot mounts ---- */

int cp_mount_encode(struct cp_writer *w, uint32_t chan, const struct cp_mount *m)
{
	if (!m->host_path || !m->guest_path || !str_fits(m->host_path, CP_MAX_STRING) ||
	    !str_fits(m->guest_path, CP_MAX_STRING) || (m->flags & ~CP_MOUNT_FLAGS_KNOWN))
		return -EINVAL;
	cp_frame_begin(w, CP_MOUNT, 0, chan);
	cp_put_str(w, CP_T_MOUNT_HOST_PATH, m->host_path);
	cp_put_str(w, CP_T_MOUNT_GUEST_PATH, m->guest_path);
	cp_put_u32(w, CP_T_MOUNT_FLAGS, m->flags);
	return cp_frame_finish(w);
}

int cp_mount_decode(const uint8_t *p, size_t n, struct cp_mount *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	DECODE_LOOP(p, n, {
		switch (f.tag) {
		case CP_T_MOUNT_HOST_PATH: r = field_set_str(&f, &m->host_path); break;
		case CP_T_MOUNT_GUEST_PATH: r = field_set_str(&f, &m->guest_path); break;
		case CP_T_MOUNT_FLAGS: r = cp_field_u32(&f, &m->flags); break;
		}
	});
	/* A flag this side does not know could be a restriction the client counts on. */
	if (!m->host_path || !m->guest_path || (m->flags & ~CP_MOUNT_FLAGS_KNOWN)) {
		ret = -EBADMSG;
		goto fail;
	}
	return 0;
fail:
	cp_mount_free(m);
	return ret;
}

void cp_mount_free(struct cp_mount *m)
{
	free(m->host_path);
	free(m->guest_path);
	memset(m, 0, sizeof(*m));
}

int cp_unmount_encode(struct cp_writer *w, uint32_t chan, const struct cp_unmount *m)
{
	if (!m->target || !str_fits(m->target, CP_MAX_STRING))
		return -EINVAL;
	cp_frame_begin(w, CP_UNMOUNT, 0, chan);
	cp_put_str(w, CP_T_UNMOUNT_TARGET, m->target);
	return cp_frame_finish(w);
}

int cp_unmount_decode(const uint8_t *p, size_t n, struct cp_unmount *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	DECODE_LOOP(p, n, {
		if (f.tag == CP_T_UNMOUNT_TARGET)
			r = field_set_str(&f, &m->target);
	});
	if (!m->target) {
		ret = -EBADMSG;
		goto fail;
	}
	return 0;
fail:
	cp_unmount_free(m);
	return ret;
}

void cp_unmount_free(struct cp_unmount *m)
{
	free(m->target);
	m->target = NULL;
}

int cp_request_ok_encode(struct cp_writer *w, uint32_t chan, const struct cp_request_ok *m)
{
	if (!str_fits(m->handle, CP_MAX_MOUNT_HANDLE) || !str_fits(m->list_json, CP_MAX_LIST_JSON))
		return -EINVAL;
	cp_frame_begin(w, CP_OK, 0, chan);
	cp_put_str(w, CP_T_REQUEST_OK_HANDLE, m->handle);
	cp_put_str(w, CP_T_REQUEST_OK_LIST_JSON, m->list_json);
	return cp_frame_finish(w);
}

int cp_request_ok_decode(const uint8_t *p, size_t n, struct cp_request_ok *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	DECODE_LOOP(p, n, {
		if (f.tag == CP_T_REQUEST_OK_HANDLE)
			r = field_set_long_str(&f, CP_MAX_MOUNT_HANDLE, &m->handle);
		else if (f.tag == CP_T_REQUEST_OK_LIST_JSON)
			r = field_set_long_str(&f, CP_MAX_LIST_JSON, &m->list_json);
	});
	return 0;
fail:
	cp_request_ok_free(m);
	return ret;
}

void cp_request_ok_free(struct cp_request_ok *m)
{
	free(m->handle);
	free(m->list_json);
	memset(m, 0, sizeof(*m));
}

/* ---- vm mounts (shim <-> agent) ---- */

/* The agent opens NAME below the share's root: one component, never "." or "..". */
static bool vm_mount_name_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	return n > 0 && n <= CP_VM_MOUNT_NAME_MAX && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..");
}

static bool vm_mount_valid(const struct cp_vm_mount *m)
{
	if (!m->target || m->target[0] != '/' || strlen(m->target) > CP_MAX_STRING || (m->flags & ~CP_VM_MOUNT_FLAGS_KNOWN))
		return false;
	if (m->kind == CP_VM_MOUNT_SHARE)
		return vm_mount_name_ok(m->name) && !m->size && !m->mode;
	if (m->kind == CP_VM_MOUNT_TMPFS)
		return !m->name && m->size > 0 && m->mode <= 07777 && !(m->flags & CP_VM_MOUNT_FILE);
	if (m->kind == CP_VM_MOUNT_SHARES_OFF || m->kind == CP_VM_MOUNT_SHARES_ON)
		return !m->name && !m->size && !m->mode && !m->flags;
	return false;
}

int cp_vm_mount_encode(struct cp_writer *w, uint32_t chan, const struct cp_vm_mount *m)
{
	if (!vm_mount_valid(m))
		return -EINVAL;
	cp_frame_begin(w, CP_VM_MOUNT, 0, chan);
	cp_put_u32(w, CP_T_VM_MOUNT_KIND, m->kind);
	if (m->name)
		cp_put_str(w, CP_T_VM_MOUNT_NAME, m->name);
	cp_put_str(w, CP_T_VM_MOUNT_TARGET, m->target);
	cp_put_u32(w, CP_T_VM_MOUNT_FLAGS, m->flags);
	if (m->kind == CP_VM_MOUNT_TMPFS) {
		cp_put_u64(w, CP_T_VM_MOUNT_SIZE, m->size);
		cp_put_u32(w, CP_T_VM_MOUNT_MODE, m->mode);
	}
	return cp_frame_finish(w);
}

int cp_vm_mount_decode(const uint8_t *p, size_t n, struct cp_vm_mount *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	DECODE_LOOP(p, n, {
		switch (f.tag) {
		case CP_T_VM_MOUNT_KIND: r = cp_field_u32(&f, &m->kind); break;
		case CP_T_VM_MOUNT_NAME: r = field_set_str(&f, &m->name); break;
		case CP_T_VM_MOUNT_TARGET: r = field_set_str(&f, &m->target); break;
		case CP_T_VM_MOUNT_FLAGS: r = cp_field_u32(&f, &m->flags); break;
		case CP_T_VM_MOUNT_SIZE: r = cp_field_u64(&f, &m->size); break;
		case CP_T_VM_MOUNT_MODE: r = cp_field_u32(&f, &m->mode); break;
		}
	});
	if (!vm_mount_valid(m)) {
		ret = -EBADMSG;
		goto fail;
	}
	return 0;
fail:
	cp_vm_mount_free(m);
	return ret;
}

void cp_vm_mount_free(struct cp_vm_mount *m)
{
	free(m->name);
	free(m->target);
	memset(m, 0, sizeof(*m));
}

int cp_vm_unmount_encode(struct cp_writer *w, uint32_t chan, const struct cp_vm_unmount *m)
{
	if (!m->target || m->target[0] != '/' || !str_fits(m->target, CP_MAX_STRING) || !m->mnt_id)
		return -EINVAL;
	cp_frame_begin(w, CP_VM_UNMOUNT, 0, chan);
	cp_put_str(w, CP_T_VM_UNMOUNT_TARGET, m->target);
	cp_put_u64(w, CP_T_VM_UNMOUNT_MNT_ID, m->mnt_id);
	return cp_frame_finish(w);
}

int cp_vm_unmount_decode(const uint8_t *p, size_t n, struct cp_vm_unmount *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	DECODE_LOOP(p, n, {
		if (f.tag == CP_T_VM_UNMOUNT_TARGET)
			r = field_set_str(&f, &m->target);
		else if (f.tag == CP_T_VM_UNMOUNT_MNT_ID)
			r = cp_field_u64(&f, &m->mnt_id);
	});
	if (!m->target || m->target[0] != '/' || !m->mnt_id) {
		ret = -EBADMSG;
		goto fail;
	}
	return 0;
fail:
	cp_vm_unmount_free(m);
	return ret;
}

void cp_vm_unmount_free(struct cp_vm_unmount *m)
{
	free(m->target);
	memset(m, 0, sizeof(*m));
}

int cp_vm_mounted_encode(struct cp_writer *w, uint32_t chan, const struct cp_vm_mounted *m)
{
	if (!m->mnt_id)
		return -EINVAL;
	cp_frame_begin(w, CP_VM_MOUNTED, 0, chan);
	cp_put_u64(w, CP_T_VM_MOUNTED_MNT_ID, m->mnt_id);
	return cp_frame_finish(w);
}

int cp_vm_mounted_decode(const uint8_t *p, size_t n, struct cp_vm_mounted *m)
{
	int ret = 0;
	memset(m, 0, sizeof(*m));
	DECODE_LOOP(p, n, {
		if (f.tag == CP_T_VM_MOUNTED_MNT_ID)
			r = cp_field_u64(&f, &m->mnt_id);
	});
	if (!m->mnt_id)
		return -EBADMSG;
	return 0;
fail:
	return ret;
}