// A compile-only stand-in for the few UnityEngine members AvatarLinkReceiver.cs uses, with Unity's
// signatures, so tests/test_unity_sample.py can type-check the MonoBehaviour with Mono. Nothing here
// runs; it is not part of the Unity package (it sits outside Assets/).

using System;

namespace UnityEngine
{
    public class Object { }

    public class Component : Object
    {
        public Transform transform { get { return null; } }
        public T GetComponent<T>() { return default(T); }
    }

    public class Behaviour : Component
    {
        public bool enabled { get; set; }
    }

    public class MonoBehaviour : Behaviour { }

    public class Transform : Component
    {
        public Vector3 localPosition { get; set; }
        public Quaternion localRotation { get; set; }
        public Quaternion rotation { get; set; }
    }

    public class Animator : Behaviour
    {
        public bool isHuman { get { return true; } }
        public Transform GetBoneTransform(HumanBodyBones humanBoneId) { return null; }
    }

    public struct Vector3
    {
        public float x, y, z;
        public Vector3(float x, float y, float z) { this.x = x; this.y = y; this.z = z; }
        public static Vector3 operator +(Vector3 a, Vector3 b) { return new Vector3(a.x + b.x, a.y + b.y, a.z + b.z); }
    }

    public struct Quaternion
    {
        public float x, y, z, w;
        public Quaternion(float x, float y, float z, float w) { this.x = x; this.y = y; this.z = z; this.w = w; }
        public static Quaternion Inverse(Quaternion rotation) { return rotation; }
        public static Quaternion operator *(Quaternion lhs, Quaternion rhs) { return lhs; }
    }

    public struct Rect
    {
        public Rect(float x, float y, float width, float height) { }
    }

    public static class GUI
    {
        public static void Label(Rect position, string text) { }
    }

    public enum HumanBodyBones
    {
        Hips = 0, LeftUpperLeg, RightUpperLeg, LeftLowerLeg, RightLowerLeg, LeftFoot, RightFoot,
        Spine, Chest, Neck, Head, LeftShoulder, RightShoulder, LeftUpperArm, RightUpperArm,
        LeftLowerArm, RightLowerArm, LeftHand, RightHand, LeftToes, RightToes, LeftEye, RightEye, Jaw,
        LeftThumbProximal, LeftThumbIntermediate, LeftThumbDistal, LeftIndexProximal,
        LeftIndexIntermediate, LeftIndexDistal, LeftMiddleProximal, LeftMiddleIntermediate,
        LeftMiddleDistal, LeftRingProximal, LeftRingIntermediate, LeftRingDistal, LeftLittleProximal,
        LeftLittleIntermediate, LeftLittleDistal, RightThumbProximal, RightThumbIntermediate,
        RightThumbDistal, RightIndexProximal, RightIndexIntermediate, RightIndexDistal,
        RightMiddleProximal, RightMiddleIntermediate, RightMiddleDistal, RightRingProximal,
        RightRingIntermediate, RightRingDistal, RightLittleProximal, RightLittleIntermediate,
        RightLittleDistal, UpperChest = 54, LastBone = 55,
    }

    [AttributeUsage(AttributeTargets.Field)]
    public sealed class TooltipAttribute : Attribute
    {
        public TooltipAttribute(string tooltip) { }
    }

    [AttributeUsage(AttributeTargets.Class)]
    public sealed class AddComponentMenu : Attribute
    {
        public AddComponentMenu(string menuName) { }
    }
}
