"""Files that run inside other programs (Blender add-on); self-contained, no avatarlink imports."""
