// Drives a humanoid Animator from a VMC stream (avatarlink, VSeeFace, any VMC "Performer").
//
// Put it on the GameObject that has the avatar's Animator (a Humanoid rig), press Play, and send to
// this port (default 127.0.0.1:39539). Parsing happens on a background thread (VmcUdpListener);
// LateUpdate applies the latest value of every bone, after the Animator has run.
//
// Rotations: VMC sends each bone's local rotation relative to a T-pose whose bone frames are aligned
// with the avatar (exactly the bones' localRotation on a VRM "normalized" model). To work on any
// humanoid (VRM, Mixamo, ...), the avatar's T-pose rotations are captured when the component starts
// (the avatar must be in T-pose then: the import pose of most humanoids), and each bone is set to
//     rotation = avatar root rotation * accumulated delta * T-pose rotation
// where the accumulated delta is the product of the received local rotations down the humanoid
// hierarchy (HumanoidBones.WorldDeltas). On a VRM normalized model this equals setting localRotation
// to the received value, as EVMC4U does.

using UnityEngine;

namespace AvatarLink
{
    [AddComponentMenu("AvatarLink/AvatarLink Receiver")]
    public class AvatarLinkReceiver : MonoBehaviour
    {
        [Tooltip("The humanoid Animator to drive (default: the one on this GameObject).")]
        public Animator animator;

        [Tooltip("127.0.0.1 receives from this computer only; 0.0.0.0 from the network too.")]
        public string bindAddress = "127.0.0.1";

        [Tooltip("UDP port; the VMC default is 39539.")]
        public int port = 39539;

        [Tooltip("Move the avatar with /VMC/Ext/Root/Pos's position.")]
        public bool applyRootPosition = false;

        [Tooltip("Turn the avatar with /VMC/Ext/Root/Pos's rotation.")]
        public bool applyRootRotation = false;

        [Tooltip("Show packets/s and the last error in the corner of the Game view.")]
        public bool showStatus = true;

        readonly VmcDecoder decoder = new VmcDecoder();
        readonly BonePose[] poses = new BonePose[HumanoidBones.Count];
        readonly Quat[] deltas = new Quat[HumanoidBones.Count];
        readonly Transform[] bones = new Transform[HumanoidBones.Count];
        readonly Quaternion[] restRotations = new Quaternion[HumanoidBones.Count];
        readonly VmcStatus status = new VmcStatus();
        VmcUdpListener listener;
        Vector3 startPosition;
        Quaternion startRotation;
        string error = "";

        void OnEnable()
        {
            if (animator == null) animator = GetComponent<Animator>();
            if (animator == null || !animator.isHuman)
            {
                error = "needs a humanoid Animator";
                enabled = false;
                return;
            }
            Transform root = animator.transform;
            startPosition = root.localPosition;
            startRotation = root.localRotation;
            Quaternion toRoot = Quaternion.Inverse(root.rotation);
            for (int i = 0; i < HumanoidBones.Count; i++)
            {
                bones[i] = animator.GetBoneTransform((HumanBodyBones)i);
                if (bones[i] != null) restRotations[i] = toRoot * bones[i].rotation;
            }
            try
            {
                listener = new VmcUdpListener(decoder, bindAddress, port);
                listener.Start();
                error = "";
            }
            catch (System.Net.Sockets.SocketException e)
            {
                error = "cannot listen on " + bindAddress + ":" + port + " (" + e.SocketErrorCode
                        + "): is another receiver (VSeeFace, EVMC4U) using the port?";
                listener = null;
            }
        }

        void OnDisable()
        {
            if (listener != null) listener.Stop();
            listener = null;
        }

        void LateUpdate()
        {
            if (listener == null) return;
            BonePose rootPose;
            decoder.CopyTo(poses, out rootPose, status);
            HumanoidBones.WorldDeltas(poses, deltas);
            Transform root = animator.transform;
            if (rootPose.Valid)
            {
                if (applyRootPosition)
                    root.localPosition = startPosition + new Vector3(rootPose.Px, rootPose.Py, rootPose.Pz);
                if (applyRootRotation)
                    root.localRotation = startRotation * ToUnity(rootPose.Rotation);
            }
            Quaternion rootRotation = root.rotation;
            for (int k = 0; k < HumanoidBones.Count; k++)
            {
                int i = HumanoidBones.ParentFirst[k];
                if (bones[i] == null || !poses[i].Valid) continue;
                bones[i].rotation = rootRotation * ToUnity(deltas[i]) * restRotations[i];
            }
        }

        static Quaternion ToUnity(Quat q)
        {
            return new Quaternion(q.X, q.Y, q.Z, q.W);
        }

        void OnGUI()
        {
            if (!showStatus) return;
            string text;
            if (listener == null)
            {
                text = "AvatarLink: " + error;
            }
            else
            {
                text = string.Format(
                    "AvatarLink udp://{0}:{1}  {2:F0} packets/s  frames {3}  bones {4}  malformed {5}  invalid {6}",
                    bindAddress, listener.Port, listener.PacketsPerSecond, status.Frames,
                    status.BoneMessages, status.Malformed, status.Invalid);
                string last = status.LastError;
                if (listener.LastSocketError.Length > 0) last = "socket: " + listener.LastSocketError;
                if (listener.Received == 0) last = "waiting for data: is the sender pointed at this port?";
                if (last.Length > 0) text += "\n" + last;
            }
            GUI.Label(new Rect(10, 10, 900, 40), text);
        }
    }
}
