/* file_reaper.h: unlinks files on a thread of its own.
 *
 * Unlinking a written file can take milliseconds: on a file system mounted with `discard`,
 * ext4 discards the freed blocks before unlink returns (measured here: most of a flush's time
 * went to blkdev_issue_discard under unlink).  The data path drops a chunk file at every
 * flush that supersedes it, under its disk's lock, so it hands the unlink to the reaper.
 *
 * A file queued when the process dies is an orphan: disk_open removes dirty files the journal
 * does not name. */
#ifndef WISP_FILE_REAPER_H
#define WISP_FILE_REAPER_H

struct file_reaper;

/* Starts the reaper's thread.  Returns NULL (and logs) if it cannot. */
struct file_reaper *file_reaper_new(void);
/* Unlinks every queued file, then stops the thread. */
void file_reaper_free(struct file_reaper *r);
/* Queues path (copied) for unlinking; with r NULL, unlinks it now. */
void file_reaper_unlink(struct file_reaper *r, const char *path);

#endif
