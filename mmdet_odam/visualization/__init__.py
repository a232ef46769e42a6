"""Drawing and writing of explanations: overlays, per-image grids, the
``index.html`` gallery and overlay videos (BGR images, cv2 drawing)."""
from ..utils.atomic import (atomic_path, imwrite_atomic, savez_atomic,
                            write_bytes_atomic, write_text_atomic)
from .gallery import gallery_entries, write_gallery
from .grid import cell_size, frame_overlay, make_grid
from .overlay import (blend_map, caption, class_colors, colorize, draw_box,
                      overlay_detection)
from .video import (VIDEO_EXTENSIONS, VideoOverlayWriter, is_video,
                    iter_video_frames, video_info)
from .writer import ExplanationWriter, explanation_arrays, safe_stem

__all__ = [
    'atomic_path', 'imwrite_atomic', 'savez_atomic', 'write_bytes_atomic',
    'write_text_atomic', 'gallery_entries', 'write_gallery', 'cell_size',
    'frame_overlay', 'make_grid', 'blend_map', 'caption', 'class_colors',
    'colorize', 'draw_box', 'overlay_detection', 'VIDEO_EXTENSIONS',
    'VideoOverlayWriter', 'is_video', 'iter_video_frames', 'video_info',
    'ExplanationWriter', 'explanation_arrays', 'safe_stem'
]
